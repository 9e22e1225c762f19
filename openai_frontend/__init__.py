"""The OpenAI-compatible HTTP shim in front of the Triton model repository.

``create_app(settings, backend)`` in :mod:`openai_frontend.app`; the launcher is
``python -m openai_frontend``; every setting lives in :mod:`openai_frontend.settings`.
"""
