"""Import and export of a team's policy in the seed's YAML shape (`mcp_access`, `environments`, `rate_limits`).

Reading is pure (`parsing`: the YAML node tree checked against the seed's shape and the models' field
validators, every problem with its line). Applying (`applying`) replaces the team's policy for each
block the file holds, through the policy services, in one transaction; a dry run rolls that
transaction back, so its report is an exact preview. `exporting` writes the seed's style back.
See docs/policy-yaml.md.
"""

from governance.services.policy_yaml.applying import infer_category, policy_import
from governance.services.policy_yaml.document import (
    BLOCKS,
    GLOBAL_LIMIT_KEYS,
    SERVER_LIMIT_KEYS,
    PolicyDocument,
    PolicyImportError,
    Problem,
)
from governance.services.policy_yaml.exporting import policy_export
from governance.services.policy_yaml.parsing import policy_parse
from governance.services.policy_yaml.report import ImportChange, ImportReport

__all__ = [
    "BLOCKS",
    "GLOBAL_LIMIT_KEYS",
    "SERVER_LIMIT_KEYS",
    "ImportChange",
    "ImportReport",
    "PolicyDocument",
    "PolicyImportError",
    "Problem",
    "infer_category",
    "policy_export",
    "policy_import",
    "policy_parse",
]
