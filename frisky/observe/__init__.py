"""``frisky observe``: views of a running cluster for people and coding agents.

Each view reads one endpoint of the dashboard's JSON API (``/api/v1/...``) and prints
text that fits 100 columns, coloured only on a terminal, ending with ``→ frisky observe``
lines naming the next command to run; ``--json`` prints the endpoint's data instead.
:func:`frisky.observe.cli.show` renders a view in-process (``frisky demo`` uses it).
"""
