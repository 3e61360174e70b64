"""Reports: ``appliance report`` and the scheduled daily/weekly reports (``[reports]``).

:mod:`~appliance.reports.data` reads the database, :mod:`~appliance.reports.render` turns it
into HTML, PDF or CSV with the graphs of :mod:`~appliance.reports.charts`,
:mod:`~appliance.reports.build` ties them together, :mod:`~appliance.reports.schedule` runs
them on a timer inside the appliance. Nothing is imported here: the config reads
:func:`~appliance.reports.period.parse_span` without loading reportlab.
"""
