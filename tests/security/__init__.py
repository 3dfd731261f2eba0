"""Security promises (docs/reliability.md, "Security"), one file per subject: who
may call an API from where and how often, what the checks cost, who may write
code steps, what is never stored or shown, and the web protections."""
