"""Command-line tools: robustmq-server (and later robustmq-ctl, robustmq-bench)."""
