"""The policies folder, installed as the package ``edge.policies``: the WAF
rules, the demo policy and the policy schema that the node reads at run time
travel inside every install (a wheel, ``pip install .``, an editable one)."""
