"""Failure-mode audits: from a case set (prompt, response, pass/fail, domain) to the units that
predict the failures, per domain and across domains, their causal effect, a probe file that
monitors new transcripts, and a report."""
