"""Check a hand-written gradient penalty against fastgp's reference and name its bug.

    report = fastgp.audit(compute_gradient_penalty)    # fn(critic, real, fake) -> scalar
    print(report)                                      # or: python -m fastgp.audit module:function
"""

from .auditor import audit
from .report import CODES, AuditReport, Finding, Variant

__all__ = ["audit", "AuditReport", "Finding", "Variant", "CODES"]
