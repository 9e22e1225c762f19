"""Hand-written pydantic models of the OpenAI request shapes the shim accepts.

Unknown fields and unknown content part types are refused with a 400 naming them.
"""
