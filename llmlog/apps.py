from django.apps import AppConfig


class LlmlogConfig(AppConfig):
    name = "llmlog"
    verbose_name = "LLM usage"
