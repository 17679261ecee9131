"""The settings the code reads in Azure against what the template sets: the Python sources are
scanned for environment reads and binding expressions (tests/deploy/code_settings.py), and every
Azure-relevant name must be set by bicep/modules/functionapp.bicep. Also host.json, the local
settings example and the catalog variables of each environment file."""

import json
import re

import pytest

from tests.deploy.bicep_tree import BICEP, ROOT, BicepFile, load, param_files
from tests.deploy.code_settings import Scan
from tower.catalog import load_catalog
from tower.errors import CatalogError

FUNCTION_APP = BICEP / "modules/functionapp.bicep"

# Read by the code but never set by the template, and why.
LOCAL_ONLY = {
    "TOWER_HOME",  # local state directory (SQLite stores, local bus, command logs); Azure uses tables
    "TOWER_LOCAL_BACKEND",  # selects a backend of the local host only
    "TOWER_API_KEY",  # `tower serve`'s stand-in for function keys; Azure checks its own keys
    "TOWER_LOCAL_LATENCY",  # the local host's latency model (Azure has the real latency)
    "TOWER_LOCAL_LATENCY_WORKERS",  # the same model's worker count
    "FUNCTIONS_CORETOOLS_ENVIRONMENT",  # set by Core Tools (`func start`), never in Azure
}
# Read by the code, deliberately left unset by the template, and why.
LEFT_UNSET = {
    # an operator's choice of OpenTelemetry sampler; unset, telemetry keeps every run whole
    "OTEL_TRACES_SAMPLER",
    # HTTP services' callback base (tower.push); unset, it is https://$WEBSITE_HOSTNAME/api
    "TOWER_CALLBACK_URL",
}
SET_BY_PLATFORM = {
    "WEBSITE_INSTANCE_ID",  # App Service sets it on every instance (not on Flex: see docs/deploy.md)
    "WEBSITE_SITE_NAME",  # the app's name, set by App Service and Flex
    "WEBSITE_HOSTNAME",  # the app's default host name, set by App Service and Flex
    "CONTAINER_NAME",  # set on Linux Consumption and Flex
    "WEBSITE_SKU",  # the plan's SKU, set by the platform
    "LEGION_SERVICE_HOST",  # set in Flex Consumption's containers
    "WEBSITE_POD_NAME",  # set when Functions run on Kubernetes
    "CONTAINER_APP_NAME",  # set by Azure Container Apps
    "FUNCTIONS_WORKER_RUNTIME",  # set by Flex from functionAppConfig.runtime; by the template on EP
    "IDENTITY_ENDPOINT",  # the managed identity's token endpoint, set on a host with an identity
    "MSI_ENDPOINT",  # the same on older hosts (tower.identity looks for either)
}
# Reads whose name is data, not code, and why they need no app setting of their own.
DYNAMIC_READS = {
    # a catalog's ${VAR} references: checked per environment by test_catalog_variables_are_set
    "tower/catalog/env.py",
    # the local host expands %NAME% binding expressions itself
    "tower/local/bindings.py",
}
# Set in local.settings.example.json ahead of the code that reads them, and why.
NOT_READ_YET: set[str] = set()
# Settings the Functions host (not Tower's code) reads from local.settings.json.
HOST_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "AzureWebJobsFeatureFlags"}


@pytest.fixture(scope="module")
def scan():
    return Scan()


def template_settings(file: BicepFile) -> set[str]:
    return {s.name for s in file.settings()}


def missing_settings(scan: Scan, settings: set[str]) -> list[str]:
    problems = []
    for read in scan.reads:
        if read.name in LOCAL_ONLY | SET_BY_PLATFORM | LEFT_UNSET:
            continue
        if read.kind == "connection":
            if read.name not in settings and f"{read.name}__fullyQualifiedNamespace" not in settings \
                    and f"{read.name}__accountName" not in settings:
                problems.append(f"{read.where}: binding connection '{read.name}' has no setting in "
                                f"{FUNCTION_APP.relative_to(ROOT)} (set {read.name}__fullyQualifiedNamespace, "
                                "__credential and __clientId there)")
        elif read.name not in settings:
            problems.append(f"{read.where}: the code reads setting '{read.name}' but "
                            f"{FUNCTION_APP.relative_to(ROOT)} does not set it (add it to the app settings there, "
                            "or to LOCAL_ONLY / SET_BY_PLATFORM / LEFT_UNSET in tests/deploy/test_app_settings.py saying why)")
    return problems


def test_the_scan_finds_the_reads_it_must(scan):
    names = {r.name for r in scan.reads}
    # one of each way of reading: literal get, a constant, a parameter fed by callers, a connection
    assert {"TOWER_CATALOG", "ServiceBusConnection__fullyQualifiedNamespace", "TOWER_LEDGER_TABLE_URL",
            "TOWER_HISTORY_TABLE_URL", "ServiceBusConnection"} <= names


def test_every_read_is_resolved(scan):
    unresolved = [u for u in scan.unresolved if u.split(":")[0] not in DYNAMIC_READS]
    assert unresolved == []


def test_every_setting_the_code_reads_is_set_by_the_template(scan):
    assert missing_settings(scan, template_settings(load(FUNCTION_APP))) == []


def test_a_setting_the_template_forgets_is_caught(scan):
    text = FUNCTION_APP.read_text().replace("  TOWER_LEDGER_TABLE_URL:", "  TOWER_LEDGER_TABLE:", 1)
    problems = missing_settings(scan, template_settings(BicepFile(FUNCTION_APP, text)))
    assert any("'TOWER_LEDGER_TABLE_URL'" in p and p.startswith("tower/runs/ledger.py:") for p in problems)


def test_new_reads_in_code_are_found(tmp_path):
    (tmp_path / "tower").mkdir()
    (tmp_path / "tower/new.py").write_text(
        "import os\nQUEUE = 'TOWER_X_QUEUE'\n"
        "def a():\n    return os.environ['TOWER_A']\n"
        "def b(env):\n    return env.get(QUEUE)\n"
        "def c():\n    return os.getenv(f'{QUEUE}_NAME')\n"
        "def d(name):\n    return os.environ.get(name)\n"
        "def e():\n    return d('TOWER_E')\n"
        "TRIGGER = '%TOWER_TOPIC%'\n"
        "def f(key):\n    return os.environ.get(key.upper())\n"
        "MARKERS = ('TOWER_M1', 'TOWER_M2')\nTABLES = {'TOWER_T1': 'one'}\n"
        "def g(env):\n    return [n for n in MARKERS if env.get(n)] + [n for n, _ in TABLES.items() if env.get(n)]\n")
    scan = Scan(tmp_path)
    assert {(r.name, r.where.split(" ")[0]) for r in scan.reads} == {
        ("TOWER_A", "tower/new.py:4"), ("TOWER_X_QUEUE", "tower/new.py:6"), ("TOWER_X_QUEUE_NAME", "tower/new.py:8"),
        ("TOWER_E", "tower/new.py:12"), ("TOWER_TOPIC", "tower/new.py:13"), ("TOWER_M1", "tower/new.py:19"),
        ("TOWER_M2", "tower/new.py:19"), ("TOWER_T1", "tower/new.py:19")}
    assert len(scan.unresolved) == 1 and scan.unresolved[0].startswith("tower/new.py:15:")


def test_identity_based_connections():
    settings = {s.name: s.value for s in load(FUNCTION_APP).settings()}
    assert settings["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["ServiceBusConnection__credential"] == "'managedidentity'"
    assert settings["ServiceBusConnection__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "'ClientId=${identityClientId};Authorization=AAD'"
    assert "Authentication=ManagedIdentity" in settings["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"]


# --- host.json ------------------------------------------------------------------------------------

# The host.json keys Tower may use (Functions 4.x with bundle 4.x), as a tree; "*" = any key.
HOST_KEYS = {
    "version": None, "functionTimeout": None,
    "logging": {"logLevel": {"*": None}, "applicationInsights": {
        "samplingSettings": {"isEnabled": None, "excludedTypes": None, "maxTelemetryItemsPerSecond": None},
        "enableDependencyTracking": None}},
    "extensionBundle": {"id": None, "version": None},
    "extensions": {
        "durableTask": {
            "hubName": None, "maxConcurrentActivityFunctions": None, "maxConcurrentOrchestratorFunctions": None,
            "maxConcurrentEntityFunctions": None, "overridableExistingInstanceStates": None,
            "extendedSessionsEnabled": None, "extendedSessionIdleTimeoutInSeconds": None,
            "defaultVersion": None, "versionMatchStrategy": None, "versionFailureStrategy": None,
            "tracing": {"*": None},
            "storageProvider": {"type": None, "connectionStringName": None, "connectionName": None,
                                "partitionCount": None, "maxQueuePollingInterval": None,
                                "controlQueueBatchSize": None, "controlQueueBufferThreshold": None,
                                "workItemQueueVisibilityTimeout": None, "trackingStoreConnectionStringName": None,
                                "useTablePartitionManagement": None}},
        "serviceBus": {"*": None},
        "http": {"*": None},
    },
    "concurrency": {"*": None}, "healthMonitor": {"*": None}, "retry": {"*": None},
}


def unknown_host_keys(data, known=HOST_KEYS, path="") -> list[str]:
    problems = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if "*" in known:
            continue
        if key not in known:
            problems.append(f"host.json: unknown key '{where}' (check the spelling against the host.json reference)")
        elif isinstance(value, dict) and isinstance(known[key], dict):
            problems.extend(unknown_host_keys(value, known[key], where))
    return problems


def known_override(name: str) -> bool:
    """An AzureFunctionsJobHost__a__b__c setting names a known host.json key a.b.c."""
    parts = name.split("__")[1:]
    node = HOST_KEYS
    for part in parts:
        if not isinstance(node, dict):
            return False
        if "*" in node:
            return True
        if part not in node:
            return False
        node = node[part]
    return True


def test_host_json_keys_are_known():
    assert unknown_host_keys(json.loads((ROOT / "host.json").read_text())) == []
    assert unknown_host_keys({"extensions": {"durableTask": {"hubname": "x"}}}) == [
        "host.json: unknown key 'extensions.durableTask.hubname' (check the spelling against the host.json reference)"]


def test_host_json_overrides_name_known_keys():
    overrides = [s for s in load(FUNCTION_APP).settings() if s.name.startswith("AzureFunctionsJobHost__")]
    assert len(overrides) >= 6
    unknown = [f"{FUNCTION_APP.relative_to(ROOT)}:{s.line}: '{s.name}' overrides no known host.json key"
               for s in overrides if not known_override(s.name)]
    assert unknown == []
    assert not known_override("AzureFunctionsJobHost__extensions__durableTask__storageProvider__maxQueuePolingInterval")


def test_host_json_app_setting_references_are_set():
    host = (ROOT / "host.json").read_text()
    settings = template_settings(load(FUNCTION_APP))
    referenced = re.findall(r'"%([A-Za-z_]\w*)%"', host)
    assert "TOWER_TASK_HUB" in referenced  # hubName: Durable refuses to start if it does not resolve
    assert [f"host.json: %{name}% is not set by {FUNCTION_APP.relative_to(ROOT)}" for name in referenced
            if name not in settings] == []


# --- local.settings.example.json --------------------------------------------------------------------

def local_settings_problems(scan: Scan, values: dict) -> list[str]:
    host = (ROOT / "host.json").read_text()
    needed = {r.name for r in scan.reads if r.kind == "binding"} | set(re.findall(r'"%([A-Za-z_]\w*)%"', host))
    needed |= {f"{r.name}__fullyQualifiedNamespace" for r in scan.reads if r.kind == "connection"}
    problems = [f"local.settings.example.json: {name} is missing, and `func start` cannot resolve it "
                "(add it to Values)" for name in sorted(needed - values.keys())]
    catalog_vars = set(re.findall(r"\$\{([A-Za-z_]\w*)", (ROOT / "examples/refinery/catalog.yaml").read_text()))
    explained = {r.name for r in scan.reads} | HOST_SETTINGS | catalog_vars | needed | NOT_READ_YET
    problems += [f"local.settings.example.json: {name} is read by nothing (remove it, or fix its name)"
                 for name in sorted(values.keys() - explained)]
    return problems


def test_local_settings_example_matches_the_code(scan):
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert local_settings_problems(scan, values) == []


def test_local_settings_mistakes_are_caught(scan):
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    values.pop("TOWER_TASK_HUB")
    values["TOWER_CATALOGUE"] = "x"
    assert local_settings_problems(scan, values) == [
        "local.settings.example.json: TOWER_TASK_HUB is missing, and `func start` cannot resolve it (add it to Values)",
        "local.settings.example.json: TOWER_CATALOGUE is read by nothing (remove it, or fix its name)"]


# --- catalog variables per environment ---------------------------------------------------------------

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|PRIVATE_KEY|API_KEY", re.I)


def object_keys(file: BicepFile, param: str) -> set[str]:
    value = file.assigned_value(param)
    if value is None or value.type != "object":
        return set()
    return {file.key_of(p) for p in value.named_children if p.type == "object_property"}


def catalog_problems(env: BicepFile) -> list[str]:
    value = env.assigned_value("catalogPath")
    path = env.string_value(value) if value is not None else None
    if path is None:
        return []
    catalog = ROOT / path
    if not catalog.exists():
        return [f"{env.rel}: catalogPath '{path}' does not exist in the project (the app ships the project folder)"]
    plain, secret = object_keys(env, "catalogSettings"), object_keys(env, "keyVaultSecrets")
    try:  # as the app loads it in Azure
        load_catalog(catalog, for_azure=True)
    except CatalogError as exc:
        return [f"{env.rel}: catalogPath '{path}' would not load in Azure: {problem}" for problem in exc.problems]
    problems = []
    for lineno, line in enumerate(catalog.read_text().splitlines(), 1):
        for name, default in re.findall(r"\$\{([A-Za-z_]\w*)(:-[^}]*)?\}", re.sub(r"(^|\s)#.*", "", line)):
            if not default and name not in plain | secret:
                problems.append(f"{catalog.relative_to(ROOT)}:{lineno}: ${{{name}}} is not set by {env.rel} "
                                f"(add it to keyVaultSecrets if it is a secret, else to catalogSettings)")
    for name in sorted(plain):
        if SECRET_NAME.search(name):
            problems.append(f"{env.rel}: catalogSettings.{name} looks like a secret "
                            "(move it to keyVaultSecrets and put the value in Key Vault)")
    return problems


@pytest.mark.parametrize("path", [p for p in param_files() if p.parent.name == "env"], ids=lambda p: p.name)
def test_catalog_variables_are_set(path):
    assert catalog_problems(load(path)) == []


def test_a_catalog_variable_left_out_is_caught():
    path = BICEP / "env/test.bicepparam"
    text = path.read_text().replace("  SNOWFLAKE_PASSWORD: 'snowflake-password'\n", "", 1)
    problems = catalog_problems(BicepFile(path, text))
    assert any("${SNOWFLAKE_PASSWORD} is not set by bicep/env/test.bicepparam" in p for p in problems)
    text = path.read_text().replace("  SNOWFLAKE_ACCOUNT: 'myorg-test'\n", "  SNOWFLAKE_ACCOUNT: 'myorg-test'\n  SNOWFLAKE_PASSWORD: 'x'\n", 1)
    assert any("catalogSettings.SNOWFLAKE_PASSWORD looks like a secret" in p for p in catalog_problems(BicepFile(path, text)))


def test_a_catalog_azure_cannot_run_is_caught():
    path = BICEP / "env/test.bicepparam"
    text = path.read_text().replace("'examples/refinery/catalog.yaml'", "'examples/local/catalog.yaml'", 1)
    assert text != path.read_text()
    problems = catalog_problems(BicepFile(path, text))
    assert problems and all("would not load in Azure" in p for p in problems)
    assert any("platform 'shell': a command platform runs its work on the machine that runs Tower" in p
               for p in problems), problems



# Tower settings the template sets ahead of the code that reads them, and why.
SET_AHEAD_OF_CODE: set[str] = set()


def unread_tower_settings(scan: Scan, file: BicepFile) -> list[str]:
    read = {r.name for r in scan.reads} | set(re.findall(r'"%([A-Za-z_]\w*)%"', (ROOT / "host.json").read_text()))
    return [f"{file.where(s.line)}: sets '{s.name}', which neither the code nor host.json reads (a typo, or a "
            "setting that is gone: fix or remove it)"
            for s in file.settings() if s.name.startswith("TOWER_") and s.name not in read | SET_AHEAD_OF_CODE]


def test_every_tower_setting_the_template_sets_is_read(scan):
    assert unread_tower_settings(scan, load(FUNCTION_APP)) == []


def test_a_misspelt_tower_setting_is_caught(scan):
    text = FUNCTION_APP.read_text().replace("  TOWER_CATALOG: catalogPath", "  TOWER_CATALOG_PATH: catalogPath", 1)
    problems = unread_tower_settings(scan, BicepFile(FUNCTION_APP, text))
    assert len(problems) == 1 and problems[0].startswith("bicep/modules/functionapp.bicep:")
    assert "sets 'TOWER_CATALOG_PATH', which neither the code nor host.json reads" in problems[0]


def test_settings_set_ahead_of_code_are_still_unread(scan):
    """Once the code reads one of them, it leaves SET_AHEAD_OF_CODE (so the list stays true)."""
    assert sorted(SET_AHEAD_OF_CODE & {r.name for r in scan.reads}) == []


def override_problems(host: dict, app: BicepFile, main: BicepFile) -> list[str]:
    """Each host.json override the template sets by default holds host.json's own value, so the
    package and the template agree unless an environment changes one on purpose."""
    defaults = {**{n: p for n, p in app.params().items()}}
    main_params = main.params()
    problems = []
    for setting in app.settings():
        if not setting.name.startswith("AzureFunctionsJobHost__"):
            continue
        node = host
        for part in setting.name.split("__")[1:]:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            continue
        name = re.sub(r"^string\((\w+)\)$", r"\1", setting.value)
        decl = main_params.get(name) or defaults.get(name)
        where = main.path if name in main_params else app.path
        text = (where.read_text().split(f"param {name} ", 1)[1].split("\n", 1)[0].split("= ", 1)[-1]
                if decl is not None else setting.value)
        value = text.strip().strip("'")
        if value != str(node):
            problems.append(f"{app.where(setting.line)}: '{setting.name}' defaults to {value}, host.json says "
                            f"{node} (make them equal, or explain beside the setting why they differ)")
    return problems


def test_durable_overrides_default_to_host_json():
    host = json.loads((ROOT / "host.json").read_text())
    assert override_problems(host, load(FUNCTION_APP), load(BICEP / "main.bicep")) == []
    host["extensions"]["durableTask"]["storageProvider"]["partitionCount"] = 8
    problems = override_problems(host, load(FUNCTION_APP), load(BICEP / "main.bicep"))
    assert len(problems) == 1 and "partitionCount' defaults to 16, host.json says 8" in problems[0]
