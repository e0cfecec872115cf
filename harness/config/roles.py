"""The role map: each model config names, under `roles`, the module-name patterns of the layers
that methods adapt (q, k, v, o: attention projections; ffn_in, ffn_out: the feed-forward layers;
`default`: what a method adapts on a model without those roles, e.g. a CNN's convolutions). Method
YAMLs name roles, not modules: `targets: ${roles:q,v}` resolves, when the config is composed, to the
chosen model's patterns (BERT: [query, value]; Llama: [q_proj, v_proj]; EfficientNet: its 1×1
convolutions), so `method=<any> model=<any>` works wherever the method can apply, and the run's
record holds the resolved module patterns. A method YAML or the command line can still give
patterns directly (`method.targets=[query]`).

A family's map is written once (harness/role_maps.py) and registered here as the config node
`base/roles/<family>`, which each model config of the family extends
(`defaults: [/base/model@_here_, /base/roles/bert@roles, _self_]`), overriding only the roles whose names
differ (DeBERTa's query_proj, key_proj, value_proj).
"""

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from harness.errors import HarnessError
from harness.role_maps import ROLE_MAPS


def patterns_of(roles: dict, role: str) -> list[str]:
    value = roles[role]
    return [str(v) for v in value] if isinstance(value, (list, tuple, ListConfig)) else [str(value)]


def resolve_roles(*wanted: str, _root_: DictConfig) -> list[str]:
    """The module-name patterns of the wanted roles on the composed config's model, in order, each once;
    a model that has none of them gives its `default` role's patterns."""
    model = _root_.get("model") or {}
    roles = model.get("roles") or {}
    found = [role for role in wanted if role in roles]
    if not found and "default" in roles:
        found = ["default"]
    missing = [role for role in wanted if role not in roles]
    if found != ["default"] and missing:
        raise HarnessError(
            f"model '{model.get('name')}' has no role {', '.join(missing)} "
            f"(method targets ${{roles:{','.join(wanted)}}}); "
            f"its roles: {', '.join(roles) or 'none'}; give method.targets as module-name patterns"
        )
    return list(dict.fromkeys(pattern for role in found for pattern in patterns_of(roles, role)))


if not OmegaConf.has_resolver("roles"):
    OmegaConf.register_new_resolver("roles", resolve_roles)
for family, role_map in ROLE_MAPS.items():
    ConfigStore.instance().store(group="base/roles", name=family, node=role_map)
