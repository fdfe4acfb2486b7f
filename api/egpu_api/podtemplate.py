"""The part of an InferenceDeployment's pod template that admission must see, and the rules over it.

The operator creates every replica pod with its own ServiceAccount, so without rules a user
allowed only to create InferenceDeployments would get any pod ``spec.template`` describes:
privileged, in the host's namespaces, with ``hostPath: /``, on a node of their choosing. The
operator must never create a pod its requester could not have created, and placement alone
chooses nodes. So the CRD rejects templates that the Pod Security ``baseline`` level forbids,
in every namespace, whatever its own Pod Security label says (the namespace's label still
applies on top: the API server checks every pod create against it, the operator's included).

CEL cannot read fields kept by ``x-kubernetes-preserve-unknown-fields``, so each field a rule
reads is declared here (the rest of a pod template is still kept as is). A rule sits on the
field it judges, so the API server's error names its exact path, e.g.
``spec.template.spec.initContainers[1].securityContext.privileged``. Arrays and the strings
rules compare carry ``maxItems``/``maxLength``: the API server refuses a CRD whose rules'
estimated cost, multiplied over unbounded lists, exceeds its budget.

``serviceAccountName``, ``serviceAccount`` and ``priorityClassName`` are declared without a
rule: the chart's ValidatingAdmissionPolicy checks them against an allow-list it is given.
"""

from typing import Any

#: Capabilities the Pod Security baseline level lets a container add; anything else (SYS_ADMIN,
#: NET_ADMIN, ALL, CAP_-prefixed spellings) is rejected.
BASELINE_CAPABILITIES = (
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
)
#: Namespaced sysctls the Pod Security baseline level calls safe (Kubernetes 1.32).
SAFE_SYSCTLS = (
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
)
#: SELinux types the baseline level allows; user and role may not be set at all.
BASELINE_SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")

#: Bounds on the lists rules read: generous for a model server, small enough for the CEL cost budget.
MAX_CONTAINERS = 32
MAX_VOLUMES = 128
MAX_PORTS = 64
MAX_CAPABILITIES = 64
MAX_SYSCTLS = 64
MAX_ANNOTATIONS = 256
#: The AppArmor annotation a pod created from the template could still carry (the API server
#: turns it into the container's appArmorProfile).
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"

CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS = ("postStart", "preStop")
_WHY = "replica pods are held to the Pod Security baseline level"


def _rule(rule: str, message: str) -> dict[str, Any]:
    return {"rule": rule, "message": message}


def _field(kind: str, description: str, *rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, "description": description, **extra}
    if rules:
        schema["x-kubernetes-validations"] = list(rules)
    return schema


def _object(description: str, properties: dict[str, Any], *rules: dict[str, Any]) -> dict[str, Any]:
    """An object whose named fields are checked and whose other fields are kept as written."""
    schema = _field("object", description, *rules, properties=properties)
    schema["x-kubernetes-preserve-unknown-fields"] = True
    return schema


def _list(description: str, items: dict[str, Any], max_items: int, *rules: dict[str, Any]) -> dict[str, Any]:
    return _field("array", description, *rules, items=items, maxItems=max_items)


def _in(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def _not_true(path: str, what: str) -> dict[str, Any]:
    return _field("boolean", what, _rule("!self", f"{path} must not be true: {_WHY}"))


def _security_options(path: str) -> dict[str, Any]:
    """Fields a pod's and a container's securityContext share: Windows host process, seccomp, AppArmor, SELinux."""
    return {
        "windowsOptions": _object(
            "Windows-specific options.",
            {"hostProcess": _not_true(f"{path}.windowsOptions.hostProcess", "Run as a Windows host process; not allowed.")},
        ),
        "seccompProfile": _object(
            "The seccomp profile.",
            {
                "type": _field(
                    "string",
                    "RuntimeDefault, Localhost or Unconfined; Unconfined is not allowed.",
                    _rule(
                        "self != 'Unconfined'",
                        f"{path}.seccompProfile.type must not be Unconfined: use RuntimeDefault; {_WHY}",
                    ),
                    maxLength=64,
                )
            },
        ),
        "appArmorProfile": _object(
            "The AppArmor profile.",
            {
                "type": _field(
                    "string",
                    "RuntimeDefault, Localhost or Unconfined; Unconfined is not allowed.",
                    _rule(
                        "self != 'Unconfined'",
                        f"{path}.appArmorProfile.type must not be Unconfined: use RuntimeDefault; {_WHY}",
                    ),
                    maxLength=64,
                )
            },
        ),
        "seLinuxOptions": _object(
            "SELinux labels.",
            {
                "type": _field(
                    "string",
                    f"SELinux type; one of {', '.join(t for t in BASELINE_SELINUX_TYPES if t)} or empty.",
                    _rule(
                        f"self in {_in(BASELINE_SELINUX_TYPES)}",
                        f"{path}.seLinuxOptions.type must be empty or one of "
                        f"{', '.join(t for t in BASELINE_SELINUX_TYPES if t)}: {_WHY}",
                    ),
                    maxLength=253,
                ),
                "user": _field(
                    "string",
                    "SELinux user; must not be set.",
                    _rule("self == ''", f"{path}.seLinuxOptions.user must not be set: {_WHY}"),
                    maxLength=253,
                ),
                "role": _field(
                    "string",
                    "SELinux role; must not be set.",
                    _rule("self == ''", f"{path}.seLinuxOptions.role must not be set: {_WHY}"),
                    maxLength=253,
                ),
            },
        ),
    }


def _host_field(path: str) -> dict[str, Any]:
    return _field(
        "string",
        "Host to connect to; must not be set (the kubelet would probe another machine from the node).",
        _rule("self == ''", f"{path} must not be set: the kubelet probes the pod's own IP; {_WHY}"),
        maxLength=253,
    )


def _handler(path: str, description: str) -> dict[str, Any]:
    """A probe or lifecycle hook: only its httpGet.host and tcpSocket.host are judged."""
    return _object(
        description,
        {
            "httpGet": _object("HTTP GET action.", {"host": _host_field(f"{path}.httpGet.host")}),
            "tcpSocket": _object("TCP socket action.", {"host": _host_field(f"{path}.tcpSocket.host")}),
        },
    )


def container(kind: str) -> dict[str, Any]:
    """Schema of one entry of ``spec.template.spec.<kind>``."""
    path = f"spec.template.spec.{kind}[]"
    security = f"{path}.securityContext"
    return _object(
        "A container, as in a pod; the fields below are checked, the rest is passed through.",
        {
            "ports": _list(
                "Ports the container exposes.",
                _object(
                    "A container port.",
                    {
                        "hostPort": _field(
                            "integer",
                            "Port on the node; must not be set (use a Service).",
                            _rule(
                                "self == 0", f"{path}.ports[].hostPort must not be set: expose the port with a Service; {_WHY}"
                            ),
                        )
                    },
                ),
                MAX_PORTS,
            ),
            "securityContext": _object(
                "Container security options; the Pod Security baseline level's limits apply.",
                {
                    "privileged": _not_true(f"{security}.privileged", "Privileged mode; not allowed."),
                    "capabilities": _object(
                        "Linux capabilities; only those added are checked.",
                        {
                            "add": _list(
                                f"Capabilities to add; only the Pod Security baseline set: {', '.join(BASELINE_CAPABILITIES)}.",
                                {"type": "string", "maxLength": 64},
                                MAX_CAPABILITIES,
                                _rule(
                                    f"self.all(c, c in {_in(BASELINE_CAPABILITIES)})",
                                    f"{security}.capabilities.add may hold only {', '.join(BASELINE_CAPABILITIES)}: "
                                    f"remove the others; {_WHY}",
                                ),
                            ),
                        },
                    ),
                    "procMount": _field(
                        "string",
                        "Default or Unmasked; Unmasked is not allowed.",
                        _rule("self == 'Default'", f"{security}.procMount must be Default: {_WHY}"),
                        maxLength=64,
                    ),
                    **_security_options(security),
                },
            ),
            **{probe: _handler(f"{path}.{probe}", f"The {probe}.") for probe in _PROBES},
            "lifecycle": _object(
                "Lifecycle hooks.",
                {hook: _handler(f"{path}.lifecycle.{hook}", f"The {hook} hook.") for hook in _HOOKS},
            ),
        },
    )


def _pod_spec() -> dict[str, Any]:
    path = "spec.template.spec"
    return _object(
        "Pod spec of a replica, as in a pod. The fields below are checked; the rest is passed through.",
        {
            "nodeName": _field(
                "string",
                "Must not be set: placement chooses each replica's node.",
                _rule(
                    "self == ''",
                    f"{path}.nodeName must not be set: placement chooses the node; use spec.placement.nodeSelector",
                ),
                maxLength=253,
            ),
            "nodeSelector": _field(
                "object",
                "Must be empty: placement chooses each replica's node; use spec.placement.nodeSelector.",
                _rule(
                    "self.size() == 0",
                    f"{path}.nodeSelector must be empty: placement would not see it; use spec.placement.nodeSelector",
                ),
                additionalProperties={"type": "string"},
            ),
            **{
                name: _not_true(f"{path}.{name}", f"Share the node's {what}; not allowed.")
                for name, what in (
                    ("hostNetwork", "network namespace"),
                    ("hostPID", "process namespace"),
                    ("hostIPC", "IPC namespace"),
                )
            },
            "serviceAccountName": _field(
                "string",
                "ServiceAccount the replica pods run as; the chart's admission policy may limit the choice.",
                maxLength=253,
            ),
            "serviceAccount": _field("string", "Deprecated alias of serviceAccountName; limited the same way.", maxLength=253),
            "priorityClassName": _field(
                "string", "PriorityClass of the replica pods; the chart's admission policy may limit the choice.", maxLength=253
            ),
            "securityContext": _object(
                "Pod security options; the Pod Security baseline level's limits apply.",
                {
                    "sysctls": _list(
                        f"Namespaced sysctls; only the Pod Security baseline's safe set: {', '.join(SAFE_SYSCTLS)}.",
                        _object(
                            "A sysctl.",
                            {
                                "name": _field(
                                    "string",
                                    "Sysctl name.",
                                    _rule(
                                        f"self in {_in(SAFE_SYSCTLS)}",
                                        f"{path}.securityContext.sysctls[].name must be one of {', '.join(SAFE_SYSCTLS)}: {_WHY}",
                                    ),
                                    maxLength=253,
                                )
                            },
                        ),
                        MAX_SYSCTLS,
                    ),
                    **_security_options(f"{path}.securityContext"),
                },
            ),
            "volumes": _list(
                "Volumes of the pod. hostPath volumes are not allowed.",
                _object(
                    "A volume.",
                    {"hostPath": _object("A directory of the node; not allowed.", {})},
                    {
                        "rule": "!has(self.hostPath)",
                        "fieldPath": ".hostPath",
                        "message": f"{path}.volumes[].hostPath is not allowed: use a PersistentVolumeClaim, "
                        f"an emptyDir or an image volume for the model; {_WHY}",
                    },
                ),
                MAX_VOLUMES,
            ),
            **{
                kind: _list(f"{kind} of the pod (at most {MAX_CONTAINERS}).", container(kind), MAX_CONTAINERS)
                for kind in CONTAINER_KINDS
            },
        },
    )


def pod_template_schema() -> dict[str, Any]:
    """The schema of ``spec.template``, merged into the field's JSON schema by ``egpu_api.inference``."""
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "metadata": _object(
                "Labels and annotations of the replica pods.",
                {
                    "annotations": _field(
                        "object",
                        "Annotations of the replica pods.",
                        _rule(
                            f"!self.exists(k, k.startsWith('{APPARMOR_ANNOTATION_PREFIX}') && self[k] == 'unconfined')",
                            f"spec.template.metadata.annotations must not set {APPARMOR_ANNOTATION_PREFIX}<container> "
                            f"to unconfined: use runtime/default; {_WHY}",
                        ),
                        additionalProperties={"type": "string"},
                        maxProperties=MAX_ANNOTATIONS,
                    )
                },
            ),
            "spec": _pod_spec(),
        },
    }
