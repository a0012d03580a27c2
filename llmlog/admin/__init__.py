"""The operator's admin: usage and history (big tables: bounded counts, indexed filters and search, CSV
export), model prices, API keys, job runs, and the failed-postings page (accounting's admin plus "Retry
now"). The dashboard is llmlog.dashboard; the shared pieces for big lists are core.admin and
llmlog.csv_export."""

from django.contrib import admin

# Importing them registers their pages (Django's autodiscover imports this package only).
from llmlog.admin import failures, jobs, keys, repricing, usage  # noqa: F401

admin.site.site_header = admin.site.site_title = "llmlog"
admin.site.index_title = "Usage, accounting and keys"
# The lists need the width (usage, failures and accounts fit 1440 px only without it, tests/e2e); every
# page is one click from the index through the breadcrumbs.
admin.site.enable_nav_sidebar = False
