"""The pieces both apps share, below both: money's scale, the admin's building blocks for big lists,
the text rule every query input obeys, and the admin's money and time formats.

`core` imports neither `accounting` nor `llmlog` (tests/test_architecture.py), so `accounting` can use
it and still never import `llmlog` (tests/accounting/test_dependencies.py). It is no Django app: no
models, no templates of its own.
"""
