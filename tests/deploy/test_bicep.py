"""The Bicep templates, checked offline over their tree-sitter parse: syntax, documentation,
parameter files, module parameters, secrets, roles, tags. Each check is also run on a broken copy
to show it catches the mistake it is there for."""

import pytest

from tests.deploy import checks
from tests.deploy.bicep_tree import BICEP, BicepFile, bicep_files, load, param_files

ALL = bicep_files() + param_files()
MAIN = BICEP / "main.bicep"
MODULES = {p.name: load(p) for p in sorted((BICEP / "modules").glob("*.bicep"))}


def ids(paths):
    return [str(p.relative_to(BICEP)) for p in paths]


def broken(path, old, new):
    """`path` with its first `old` replaced by `new` (the mistake a check must catch)."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}: the mutation no longer applies"
    return BicepFile(path, text.replace(old, new, 1))


def test_templates_exist():
    assert MAIN.exists()
    assert {"identity.bicep", "storage.bicep", "monitoring.bicep", "servicebus.bicep", "keyvault.bicep",
            "durabletask.bicep", "functionapp.bicep", "alerts.bicep", "workbook.bicep"} <= MODULES.keys()
    assert {p.name for p in param_files()} >= {"dev.bicepparam", "test.bicepparam", "prod.bicepparam"}


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_parses(path):
    assert checks.syntax(load(path)) == []


def test_syntax_error_is_reported_with_file_and_line():
    problems = checks.syntax(broken(BICEP / "modules/storage.bicep", "kind: 'StorageV2'", "kind: 'StorageV2"))
    assert problems and problems[0].startswith("bicep/modules/storage.bicep:")
    line = int(problems[0].split(":")[1])
    assert 40 <= line <= 60  # near `kind:` of the account, not at the end of the file


def test_param_file_syntax_error_is_reported():
    problems = checks.syntax(broken(BICEP / "env/dev.bicepparam", "param retentionDays = 14", "param retentionDays = ["))
    assert problems and "bicep/env/dev.bicepparam:" in problems[0]


@pytest.mark.parametrize("path", bicep_files(), ids=ids(bicep_files()))
def test_every_parameter_and_output_is_described(path):
    assert checks.documented(load(path)) == []


def test_undescribed_parameter_is_caught():
    problems = checks.documented(broken(MAIN, "@description('Replication of the storage account.')\n", ""))
    assert len(problems) == 1 and "parameter 'storageSku'" in problems[0] and "bicep/main.bicep:" in problems[0]


def test_default_outside_its_allowed_values_is_caught():
    problems = checks.documented(broken(MAIN, "param instanceMemoryMB int = 2048", "param instanceMemoryMB int = 1024"))
    assert len(problems) == 1 and "'instanceMemoryMB' defaults to 1024" in problems[0]
    problems = checks.documented(broken(MAIN, "param durableBackend string = 'azureStorage'",
                                        "param durableBackend string = 'azureTables'"))
    assert len(problems) == 1 and "'durableBackend' defaults to 'azureTables'" in problems[0]


@pytest.mark.parametrize("path", param_files(), ids=ids(param_files()))
def test_parameter_files_set_what_main_needs(path):
    assert checks.env_file(load(MAIN), load(path)) == []


def test_parameter_file_mistakes_are_caught():
    env = BICEP / "env/prod.bicepparam"
    missing = checks.env_file(load(MAIN), broken(env, "param catalogPath = 'examples/refinery/catalog.yaml'\n", ""))
    assert any("required parameter 'catalogPath'" in p for p in missing)
    unknown = checks.env_file(load(MAIN), broken(env, "param retentionDays = 90", "param retentionDayz = 90"))
    assert any("'retentionDayz' does not exist" in p and "prod.bicepparam:" in p for p in unknown)
    disallowed = checks.env_file(load(MAIN), broken(env, "param hostingPlan = 'FlexConsumption'",
                                                    "param hostingPlan = 'Consumption'"))
    assert any("'hostingPlan' = 'Consumption' is not one of its allowed values" in p for p in disallowed)


def test_module_parameters_match_the_modules():
    assert checks.module_params(load(MAIN)) == []


def test_module_parameter_mistakes_are_caught():
    unknown = checks.module_params(broken(MAIN, "    skuName: storageSku\n", "    sku: storageSku\n"))
    assert any("module 'storage' has no parameter 'sku'" in p for p in unknown)
    missing = checks.module_params(broken(MAIN, "    deploymentContainerName: 'app-package'\n", ""))
    assert any("module 'storage' needs parameter 'deploymentContainerName'" in p for p in missing)


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_no_key_or_connection_string_or_secret_output(path):
    assert checks.secrets(load(path)) == []


@pytest.mark.parametrize("old,new,expect", [
    ("output name string = storage.name", "output key string = storage.listKeys().keys[0].value", "list*() call"),
    ("output name string = storage.name", "output accountKey string = storage.name", "looks like a secret"),
])
def test_secrets_in_storage_are_caught(old, new, expect):
    problems = checks.secrets(broken(BICEP / "modules/storage.bicep", old, new))
    assert any(expect in p and "bicep/modules/storage.bicep:" in p for p in problems)


def test_connection_string_setting_is_caught():
    problems = checks.secrets(broken(BICEP / "modules/functionapp.bicep",
                                     "  AzureWebJobsStorage__accountName: storageAccountName\n",
                                     "  AzureWebJobsStorage: 'DefaultEndpointsProtocol=https;AccountName=x'\n"))
    assert any("storage connection string" in p for p in problems)
    problems = checks.secrets(broken(BICEP / "modules/functionapp.bicep", "  TOWER_TASK_HUB: taskHubName\n",
                                     "  ServiceBusConnectionString: taskHubName\n"))
    assert any("'ServiceBusConnectionString' is a connection string" in p for p in problems)


@pytest.mark.parametrize("path", bicep_files(), ids=ids(bicep_files()))
def test_role_assignments_are_loops_with_guid_names(path):
    assert checks.role_assignments(load(path)) == []


def test_role_assignment_without_guid_name_is_caught():
    problems = checks.role_assignments(broken(BICEP / "modules/keyvault.bicep",
                                              "name: guid(vault.id, principalId, role.id)", "name: 'kv-reader'"))
    assert any("role assignment name is \"'kv-reader'\"" in p for p in problems)


def test_every_role_the_code_needs_is_assigned_on_its_resource():
    assert checks.required_roles(MODULES) == []


def test_missing_or_misscoped_role_is_caught():
    modules = dict(MODULES)
    modules["servicebus.bicep"] = broken(BICEP / "modules/servicebus.bicep", "  scope: eventsQueue\n", "  scope: namespace\n")
    problems = checks.required_roles(modules)
    assert any("'Azure Service Bus Data Receiver'" in p and "found on: ['Microsoft.ServiceBus/namespaces@" in p
               for p in problems)
    modules = dict(MODULES)
    modules["durabletask.bicep"] = broken(BICEP / "modules/durabletask.bicep", "0ad04412-c4d5-4796-b79c-f76d14c8d402",
                                          "00000000-0000-0000-0000-000000000000")
    assert any("'Durable Task Data Contributor'" in p for p in checks.required_roles(modules))


@pytest.mark.parametrize("path", bicep_files(), ids=ids(bicep_files()))
def test_resources_are_tagged(path):
    assert checks.tags(load(path)) == []


def test_untagged_resource_is_caught():
    problems = checks.tags(broken(BICEP / "modules/identity.bicep", "  tags: tags\n", ""))
    assert any("resource 'identity' has no tags" in p for p in problems)


def test_azd_tags():
    main = MAIN.read_text()
    assert "'azd-env-name': environmentName" in main
    app = (BICEP / "modules/functionapp.bicep").read_text()
    assert "'azd-service-name': 'tower'" in app


def test_every_module_gets_the_tags_and_deterministic_names():
    main = load(MAIN)
    for module in main.modules():
        declared = BicepFile(BICEP / module.path).params()
        if "tags" in declared:
            assert "tags" in module.params, f"{main.where(module.line)}: module '{module.symbol}' gets no tags"
    assert "uniqueString(subscription().id, resourceGroup().id, environmentName)" in MAIN.read_text()


@pytest.mark.parametrize("path", bicep_files(), ids=ids(bicep_files()))
def test_loaded_files_exist(path):
    assert checks.loaded_files(load(path)) == []


def test_missing_query_file_is_caught():
    problems = checks.loaded_files(broken(BICEP / "modules/alerts.bicep", "alert-no-tick.kql", "alert-no-tik.kql"))
    assert any("alert-no-tik.kql" in p and "bicep/modules/alerts.bicep:" in p for p in problems)


def test_task_hub_names_suit_both_backends():
    """Azure Storage: 3-45 letters and digits, starting with a letter (the hub names queues and
    tables); the Durable Task Scheduler accepts those too."""
    import re

    names = [re.search(r"param taskHubName string = '([^']*)'", MAIN.read_text()).group(1)]
    for path in param_files():
        value = load(path).assigned_value("taskHubName")
        if value is not None:
            names.append(load(path).string_value(value))
    assert [n for n in names if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,44}", n or "")] == []
