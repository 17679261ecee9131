// dev: the smallest footprint; alerts on, notifications to the team list.
// az deployment group create -g <rg> -f bicep/main.bicep -p bicep/env/dev.bicepparam
using '../main.bicep'

param environmentName = 'dev'
param catalogPath = 'examples/refinery/catalog.yaml'
param alertEmails = [
  'data-platform-dev@example.com'
]

// What the catalog reads as ${NAME}: plain values here, secrets from Key Vault.
param catalogSettings = {
  DATABRICKS_HOST: 'https://adb-0000000000000000.0.azuredatabricks.net'
  SNOWFLAKE_ACCOUNT: 'myorg-dev'
  REFINERY_API_URL: 'https://refinery-dev.example.com'
}
param keyVaultSecrets = {
  DATABRICKS_TOKEN: 'databricks-token'
  SNOWFLAKE_PASSWORD: 'snowflake-password'
  REFINERY_API_TOKEN: 'refinery-api-token'
}

param maximumInstanceCount = 40
param retentionDays = 14
