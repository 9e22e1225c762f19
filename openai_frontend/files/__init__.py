"""The Files API's storage (:mod:`.store`) and streamed multipart uploads (:mod:`.upload`)."""
