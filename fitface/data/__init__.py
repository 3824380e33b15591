"""Training datasets: format, builders (synthetic, ICT) and importer."""
