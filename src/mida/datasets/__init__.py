"""AI-ready datasets: cohorts, immutable releases, exporters, dataset cards, packages."""
