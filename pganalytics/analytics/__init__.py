"""The analytics domain: collection of pg_stat_statements, its history, fingerprints' features,
safe EXPLAIN, anomalies, the index advisor, and the cached answers the pages and the API serve
(services)."""
