"""Incidents: contain (disable flags) → review the audit of linked sessions → root cause → resolve.

Above governance (it switches flags) and audit (it links sessions); nothing below imports it.
"""
