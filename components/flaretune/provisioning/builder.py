"""``nvflare provision`` builder: every startup kit comes out ready to run flaretune jobs, under site policy.

Add it to a project file's ``builders`` after ``StaticFileBuilder`` (see ``provisioning/*.yml``). For the
server and every client it writes, into the kit's ``local/`` folder:

* ``resources.json.default`` — FLARE's generated file with ``flaretune.`` added to ``class_allow_list``
  (FLARE 2.9 builds only allow-listed job components; our jobs use the installed package, no ``custom/``);
* ``authorization.json.default`` — FLARE's default role policy with the ``overrides`` given here
  (the templates deny BYOC to every role but the project admin: flaretune jobs carry no custom code);
* ``privacy.json`` (clients) — a default scope whose result filter is
  :class:`flaretune.filters.guard.AdapterOnlyGuard`, so only adapter tensors can leave the site; with
  ``client_dp``, the scope also clips and noises every update with
  :class:`flaretune.filters.dp.GaussianPrivacyFilter` (on task data it records the received model), so the
  site enforces differential privacy whatever the job asks; with ``secure_aggregation``, the scope ends
  every chain with :class:`flaretune.filters.secagg.SecureAggregationFilter`, so a model update leaves the
  site only masked for a secure-aggregation round and a plain job's update is refused at the site
  (``UnsafeJobError``). It is the only scope: a job that names
  another one in its ``meta.json`` (``"scope"``) is refused by FLARE at the site
  ("privacy scope ... is not allowed").

Site admins can still edit every file after provisioning: ``resources.json`` and ``authorization.json``
(without ``.default``) take precedence, as FLARE documents.
"""

import json
from pathlib import Path
from typing import Dict, List, Optional

from nvflare.lighter.spec import Builder

from flaretune.errors import ConfigError
from flaretune.provisioning.policy import ALLOW_PREFIX, DEFAULT_RESOURCES, allow_in_file

AUTHZ_DEFAULT = "authorization.json.default"
PRIVACY = "privacy.json"
GUARD_PATH = "flaretune.filters.guard.AdapterOnlyGuard"
DP_PATH = "flaretune.filters.dp.GaussianPrivacyFilter"
SECAGG_PATH = "flaretune.filters.secagg.SecureAggregationFilter"


class FlaretuneSiteBuilder(Builder):
    def __init__(
        self,
        allow_prefixes: Optional[List[str]] = None,
        authorization: Optional[Dict[str, Dict[str, str]]] = None,
        adapter_guard: Optional[dict] = None,
        scope_name: str = "adapters_only",
        client_dp: Optional[dict] = None,
        secure_aggregation: Optional[dict] = None,
    ):
        """Site policy for flaretune startup kits.

        Args:
            allow_prefixes: class path prefixes added to each site's allow list (default ``["flaretune."]``).
            authorization: ``{role: {right: value}}`` merged over FLARE's default policy, e.g.
                ``{"lead": {"byoc": "none"}}``; values as in FLARE (``any``, ``none``, ``o:site``, ...).
            adapter_guard: arguments of ``AdapterOnlyGuard`` (``allowed``, ``max_mb``); null writes no
                privacy policy.
            scope_name: name of the privacy scope the guard lives in; it is every client's default scope.
            client_dp: arguments of ``GaussianPrivacyFilter`` (``noise_multiplier``, ``clip_norm``) that every
                client applies to every update it sends, before the guard; null: no site-enforced DP.
            secure_aggregation: arguments of ``SecureAggregationFilter`` (``{}`` for its defaults): every client
                masks every update it sends, after DP and the guard, and refuses to send one unmasked; null: off.
        """
        self.allow_prefixes = allow_prefixes
        self.authorization = authorization
        self.adapter_guard = adapter_guard
        self.scope_name = scope_name
        self.client_dp = client_dp
        self.secure_aggregation = secure_aggregation
        self._prefixes = list(allow_prefixes) if allow_prefixes is not None else [ALLOW_PREFIX]
        if not all(isinstance(p, str) and p for p in self._prefixes):
            raise ConfigError(f"allow_prefixes must be a list of class path prefixes, got {allow_prefixes!r}")
        if authorization is not None and not (
            isinstance(authorization, dict) and all(isinstance(v, dict) for v in authorization.values())
        ):
            raise ConfigError(f"authorization must map role -> {{right: value}}, got {authorization!r}")
        if adapter_guard is not None:
            from flaretune.filters.guard import AdapterOnlyGuard

            AdapterOnlyGuard(**adapter_guard)  # a bad argument fails the provisioning, not the first job
        if client_dp is not None:
            if adapter_guard is None:
                raise ConfigError("client_dp lives in the adapter_guard's privacy scope: give adapter_guard too")
            from flaretune.filters.dp import GaussianPrivacyFilter

            GaussianPrivacyFilter(**client_dp)
        if secure_aggregation is not None:
            if adapter_guard is None:
                raise ConfigError("secure_aggregation lives in the adapter_guard's privacy scope: give adapter_guard too")
            from flaretune.filters.secagg import SecureAggregationFilter

            SecureAggregationFilter(**secure_aggregation)

    def build(self, project, ctx):
        server = project.get_server()
        for participant in ([server] if server else []) + list(project.get_clients()):
            local = Path(ctx.get_local_dir(participant))
            self._allow(local / DEFAULT_RESOURCES)
            if self.authorization:
                self._authorize(local / AUTHZ_DEFAULT)
            if self.adapter_guard is not None and participant is not server:
                self._privacy(local / PRIVACY)

    def _allow(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"{path} is missing: put FlaretuneSiteBuilder after StaticFileBuilder in builders")
        allow_in_file(path, path, self._prefixes)

    def _authorize(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"{path} is missing: put FlaretuneSiteBuilder after StaticFileBuilder in builders")
        policy = json.loads(path.read_text())
        permissions = policy.setdefault("permissions", {})
        for role, rights in self.authorization.items():
            current = permissions.get(role)
            if current == "any":  # a role with every right: keep it unless the override names it whole
                current = {}
            permissions[role] = {**(current if isinstance(current, dict) else {}), **rights}
        path.write_text(json.dumps(policy, indent=2) + "\n")

    def _privacy(self, path: Path) -> None:
        scope = {
            "name": self.scope_name,
            "properties": {"description": "only adapter tensors may leave this site (flaretune AdapterOnlyGuard)"},
            "task_result_filters": [{"path": GUARD_PATH, "args": dict(self.adapter_guard)}],
        }
        if self.client_dp is not None:
            dp = {"path": DP_PATH, "args": dict(self.client_dp)}
            scope["properties"]["description"] += "; every update is clipped and noised (GaussianPrivacyFilter)"
            scope["task_data_filters"] = [dp]
            scope["task_result_filters"].insert(0, dp)
        if self.secure_aggregation is not None:
            secagg = {"path": SECAGG_PATH, "args": dict(self.secure_aggregation)}
            scope["properties"]["description"] += "; updates leave only masked for secure aggregation"
            scope.setdefault("task_data_filters", []).append(secagg)
            scope["task_result_filters"].append(secagg)
        path.write_text(json.dumps({"scopes": [scope], "default_scope": self.scope_name}, indent=2) + "\n")
