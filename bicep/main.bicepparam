// The parameters `azd up` uses (azd looks for <module>.bicepparam beside main.bicep). Every value
// comes from the azd environment: azd sets AZURE_ENV_NAME, AZURE_LOCATION and AZURE_PRINCIPAL_ID;
// set the TOWER_* ones with `azd env set NAME VALUE` (docs/deploy.md). For `az deployment`, use
// the files in env/ instead.
using 'main.bicep'

param environmentName = readEnvironmentVariable('AZURE_ENV_NAME')
param location = readEnvironmentVariable('AZURE_LOCATION')
param catalogPath = readEnvironmentVariable('TOWER_CATALOG_PATH', 'examples/refinery/catalog.yaml')
param alertEmails = split(readEnvironmentVariable('TOWER_ALERT_EMAILS'), ',')
param hostingPlan = readEnvironmentVariable('TOWER_HOSTING_PLAN', 'FlexConsumption')
param durableBackend = readEnvironmentVariable('TOWER_DURABLE_BACKEND', 'azureStorage')
// the signed-in user may put the platform secrets into Key Vault
param secretsOfficerPrincipalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')
param secretsOfficerPrincipalType = readEnvironmentVariable('AZURE_PRINCIPAL_TYPE', 'User')
param catalogSettings = json(readEnvironmentVariable('TOWER_CATALOG_SETTINGS', '{}'))
param keyVaultSecrets = json(readEnvironmentVariable('TOWER_KEY_VAULT_SECRETS', '{}'))
param authClientId = readEnvironmentVariable('TOWER_AUTH_CLIENT_ID', '')
