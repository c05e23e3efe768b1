"""Request and reply bodies: the OpenAI wire models (``openai``) and the REST ones (``rest``); pydantic only."""
