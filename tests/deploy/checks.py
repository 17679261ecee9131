"""The deployment checks, each a function from parsed files to a list of problems
(`file:line: what is wrong (what to do)`), so a test can run it on the real files and on a broken
copy and see it fail."""

from __future__ import annotations

import re

from tests.deploy.bicep_tree import BICEP, BicepFile

# --- roles: what the code needs, on which resource -------------------------------------------------
# (role definition id, role name, module file, resource type the assignment must be scoped to, why)
REQUIRED_ROLES = [
    ("b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "Storage Blob Data Owner", "storage.bicep",
     "Microsoft.Storage/storageAccounts@", "host storage, task hub blobs, Flex deployment package"),
    ("974c5e8b-45b9-4653-ba55-5f855dd0fb88", "Storage Queue Data Contributor", "storage.bicep",
     "Microsoft.Storage/storageAccounts@", "the Azure Storage task hub's queues"),
    ("0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "Storage Table Data Contributor", "storage.bicep",
     "Microsoft.Storage/storageAccounts@", "the task hub's tables and Tower's ledger/history/runs tables"),
    ("4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0", "Azure Service Bus Data Receiver", "servicebus.bicep",
     "Microsoft.ServiceBus/namespaces/queues@", "the on_event trigger on the events queue"),
    ("69a216fc-b8fb-44d8-bc22-1f3c2cd27a39", "Azure Service Bus Data Sender", "servicebus.bicep",
     "Microsoft.ServiceBus/namespaces/topics@", "run notifications on the topic"),
    ("69a216fc-b8fb-44d8-bc22-1f3c2cd27a39", "Azure Service Bus Data Sender", "servicebus.bicep",
     "Microsoft.ServiceBus/namespaces/queues@", "POST /api/events on the events queue"),
    ("4633458b-17de-408a-b874-0445c86b69e6", "Key Vault Secrets User", "keyvault.bicep",
     "Microsoft.KeyVault/vaults@", "Key Vault references in the app settings"),
    ("3913510d-42f4-4e42-8a64-420c390055eb", "Monitoring Metrics Publisher", "monitoring.bicep",
     "Microsoft.Insights/components@", "Entra ID ingestion into Application Insights"),
    ("0ad04412-c4d5-4796-b79c-f76d14c8d402", "Durable Task Data Contributor", "durabletask.bicep",
     "Microsoft.DurableTask/schedulers@", "the Durable Task Scheduler backend"),
]

# --- secrets -------------------------------------------------------------------------------------
FORBIDDEN = [
    (re.compile(r"\blist[A-Z]\w*\s*\("), "a list*() call (listKeys, listConnectionStrings...) returns keys"),
    (re.compile(r"AccountKey", re.I), "a storage account key"),
    (re.compile(r"SharedAccessKey|SharedAccessSignature|\bsas\w*Token", re.I), "a shared access key or SAS"),
    (re.compile(r"DefaultEndpointsProtocol", re.I), "a storage connection string"),
    (re.compile(r"(primary|secondary)(Key|ConnectionString)", re.I), "a resource key or connection string"),
    (re.compile(r"InstrumentationKey\s*=", re.I), "an instrumentation key written out"),
]
# Settings called *connection string* that hold no secret, and why they are allowed.
CONNECTION_SETTINGS_WITHOUT_SECRET = {
    # names the Application Insights component and endpoint; local auth is disabled, so ingestion
    # needs the identity's Entra ID token (APPLICATIONINSIGHTS_AUTHENTICATION_STRING)
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    # Endpoint=...;Authentication=ManagedIdentity;ClientID=...: an address and an identity, no key
    "DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
}
# Outputs whose name sounds secret but whose value is not, and why.
OUTPUTS_WITHOUT_SECRET = {
    "applicationInsightsConnectionString",  # see APPLICATIONINSIGHTS_CONNECTION_STRING above
}
SECRET_OUTPUT_NAME = re.compile(r"secret|password|(?<!vault_)(?<!vault)key(?!_?vault)|token|connection_?string|credential", re.I)


def _code(file: BicepFile) -> list[tuple[int, str]]:
    """(line, text) of the file without its comments."""
    lines = file.source.decode().splitlines()
    for node in file.walk():
        if node.type == "comment":
            (r0, c0), (r1, c1) = node.start_point, node.end_point
            if r0 == r1:
                lines[r0] = lines[r0][:c0] + " " * (c1 - c0) + lines[r0][c1:]
            else:
                lines[r0] = lines[r0][:c0]
                for r in range(r0 + 1, r1):
                    lines[r] = ""
                lines[r1] = " " * c1 + lines[r1][c1:]
    return list(enumerate(lines, 1))


def syntax(file: BicepFile) -> list[str]:
    return file.syntax_errors()


def documented(file: BicepFile) -> list[str]:
    """@description on every parameter and output; an @allowed parameter's default is allowed."""
    problems = []
    for param in file.params().values():
        if not any(d.startswith("@description(") for d in param.decorators):
            problems.append(f"{file.where(param.line)}: parameter '{param.name}' has no @description "
                            "(add @description('...') above it: what it is and what it changes)")
    for decl in file.top("parameter_declaration"):
        param = file.params()[file.src(decl.named_children[0])]
        allowed = next((d for d in param.decorators if d.startswith("@allowed(")), None)
        default = decl.named_children[-1]
        if allowed and param.has_default and default.type in {"string", "number"}:
            literal = f"'{file.string_value(default)}'" if default.type == "string" else file.src(default)
            if not re.search(rf"(^|\s){re.escape(literal)}(\s|$)", allowed[len("@allowed(["):-2]):
                problems.append(f"{file.where(param.line)}: parameter '{param.name}' defaults to {literal}, "
                                "which its @allowed list does not contain (add it there or change the default)")
    for out in file.outputs():
        if not any(d.startswith("@description(") for d in out.decorators):
            problems.append(f"{file.where(out.line)}: output '{out.name}' has no @description "
                            "(add @description('...') above it)")
    return problems


def secrets(file: BicepFile) -> list[str]:
    problems = []
    for line, text in _code(file):
        for pattern, what in FORBIDDEN:
            if pattern.search(text):
                problems.append(f"{file.where(line)}: {what}: {text.strip()[:80]!r} (Tower reaches every "
                                "resource with its managed identity: grant a role instead of passing a key)")
    for setting in file.settings():
        if re.search(r"connection_?string$", setting.name, re.I) and setting.name not in CONNECTION_SETTINGS_WITHOUT_SECRET:
            problems.append(f"{file.where(setting.line)}: app setting '{setting.name}' is a connection string "
                            "(use the identity-based form: <prefix>__fullyQualifiedNamespace / __accountName, "
                            "__credential: managedidentity, __clientId)")
    secure = {p.name for p in file.params().values() if any(d.startswith("@secure") for d in p.decorators)}
    for out in file.outputs():
        if any(d.startswith("@secure") for d in out.decorators) or (
                SECRET_OUTPUT_NAME.search(out.name) and out.name not in OUTPUTS_WITHOUT_SECRET):
            problems.append(f"{file.where(out.line)}: output '{out.name}' looks like a secret "
                            "(outputs are stored in the deployment history in clear: output no secret)")
        used = set(re.findall(r"[A-Za-z_]\w*", out.expression)) & secure
        if used:
            problems.append(f"{file.where(out.line)}: output '{out.name}' returns the @secure parameter "
                            f"{sorted(used)} (remove it from the outputs)")
    return problems


def env_file(main: BicepFile, env: BicepFile) -> list[str]:
    """A parameter file uses main.bicep, sets every parameter without a default, sets nothing
    else, and gives an @allowed parameter one of its values."""
    problems = []
    target = env.using()
    if target is None or (env.path.parent / target).resolve() != main.path.resolve():
        problems.append(f"{env.where(1)}: `using {target!r}` does not point at {main.rel} "
                        "(write: using '<relative path to>/main.bicep')")
    params = main.params()
    assigned = env.assigned_params()
    for name, param in params.items():
        if not param.has_default and name not in assigned:
            problems.append(f"{env.where(1)}: required parameter '{name}' ({main.where(param.line)}) is not set "
                            f"(add: param {name} = ...)")
    for name, line in assigned.items():
        if name not in params:
            problems.append(f"{env.where(line)}: parameter '{name}' does not exist in {main.rel} "
                            "(remove it, or fix the spelling)")
            continue
        allowed = next((d for d in params[name].decorators if d.startswith("@allowed(")), None)
        value = env.assigned_value(name)
        literal = env.string_value(value) if value is not None and value.type == "string" else None
        if allowed and literal is not None and f"'{literal}'" not in allowed:
            problems.append(f"{env.where(line)}: parameter '{name}' = '{literal}' is not one of its allowed "
                            f"values ({main.where(params[name].line)}) (use one of those)")
    return problems


def module_params(main: BicepFile) -> list[str]:
    """Every module exists, every parameter passed exists there, every required one is passed."""
    problems = []
    for module in main.modules():
        path = (main.path.parent / module.path)
        if not path.exists():
            problems.append(f"{main.where(module.line)}: module '{module.symbol}': {module.path} does not exist")
            continue
        declared = BicepFile(path).params()
        for name, line in module.params.items():
            if name not in declared:
                problems.append(f"{main.where(line)}: module '{module.symbol}' has no parameter '{name}' "
                                f"({module.path}) (remove it or declare it there)")
        for name, param in declared.items():
            if not param.has_default and name not in module.params:
                problems.append(f"{main.where(module.line)}: module '{module.symbol}' needs parameter '{name}' "
                                f"({module.path}:{param.line}) (pass it in params)")
    return problems


def _resource_types(file: BicepFile) -> dict[str, str]:
    return {file.src(r.named_children[0]): file.string_value(r.named_children[1]) or ""
            for r in file.top("resource_declaration")}


def role_assignments(file: BicepFile) -> list[str]:
    """Role assignments are loops over a list of roles with guid(scope, principal, role) names."""
    problems = []
    for res in file.role_assignments():
        loop = next((n for n in file.walk(res) if n.type == "for_statement"), None)
        if loop is None:
            problems.append(f"{file.where(res)}: role assignment is not a loop over a list of roles "
                            "(write `= [for role in roles: {...}]`)")
            continue
        name = next((p for p in file.walk(res) if p.type == "object_property" and file.key_of(p) == "name"), None)
        value = file.src(name.named_children[-1]) if name is not None else ""
        if not re.fullmatch(r"guid\([^,]+,[^,]+,[^,]+\)", value.replace("\n", "")):
            problems.append(f"{file.where(res)}: role assignment name is {value!r} "
                            "(name it guid(<scope>.id, <principalId>, <role id>) so a redeploy finds it again)")
    return problems


def assigned_roles(file: BicepFile) -> dict[str, set[str]]:
    """role id -> resource types it is assigned on, for the loops of this file."""
    lists = {}
    for var in file.top("variable_declaration"):
        lists[file.src(var.named_children[0])] = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                                                                file.src(var)))
    types = _resource_types(file)
    found: dict[str, set[str]] = {}
    for res in file.role_assignments():
        loop = next((n for n in file.walk(res) if n.type == "for_statement"), None)
        if loop is None:
            continue
        over = [file.src(n) for n in loop.named_children if n.type == "identifier"][-1:]  # [for x in <list>: ...]
        over = over[0] if over else ""
        scope = next((p for p in file.walk(res) if p.type == "object_property" and file.key_of(p) == "scope"), None)
        scope_type = types.get(file.src(scope.named_children[-1]), "") if scope is not None else ""
        for role in lists.get(over, ()):
            found.setdefault(role, set()).add(scope_type)
    return found


def required_roles(modules: dict[str, BicepFile]) -> list[str]:
    problems = []
    for role, name, module, scope_type, why in REQUIRED_ROLES:
        file = modules[module]
        scopes = assigned_roles(file).get(role, set())
        if not any(s.startswith(scope_type) for s in scopes):
            problems.append(f"{file.rel}:1: the identity is not granted '{name}' ({role}) on a {scope_type.rstrip('@')} "
                            f"(found on: {sorted(scopes) or 'nothing'}); the app needs it for {why} "
                            "(add it to the module's role list, scoped to that resource)")
    return problems


def tags(file: BicepFile) -> list[str]:
    """Every top-level resource with a location carries tags."""
    problems = []
    for res in file.top("resource_declaration"):
        body = next((n for n in file.walk(res) if n.type == "object"), None)
        keys = {file.key_of(p) for p in (body.named_children if body is not None else []) if p.type == "object_property"}
        if "location" in keys and "tags" not in keys:
            problems.append(f"{file.where(res)}: resource '{file.src(res.named_children[0])}' has no tags "
                            "(add `tags: tags`: azd and cost reports find resources by them)")
    return problems


def loaded_files(file: BicepFile) -> list[str]:
    problems = []
    for node in file.walk():
        if node.type == "call_expression" and file.src(node.named_children[0]) in {"loadTextContent", "loadJsonContent"}:
            arg = node.named_children[1].named_children[0]
            path = file.string_value(arg)
            if path is None or not (file.path.parent / path).exists():
                problems.append(f"{file.where(node)}: {file.src(node)[:60]} names a file that does not exist "
                                f"(relative to {file.path.parent.relative_to(BICEP.parent)})")
    return problems
