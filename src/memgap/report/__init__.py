"""Renderers only: a report aggregated by ``memgap.analysis.report_data`` written as HTML,
Markdown or JSON, each behind the one interface of ``memgap.report.base.Reporter``."""
