"""OpenAI answer shapes (objects and stream events) built from the service's results."""
