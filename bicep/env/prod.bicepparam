// prod: zone-redundant storage, 4 GB instances, purge-protected Key Vault, longer retention,
// alerts to the on-call list.
// az deployment group create -g <rg> -f bicep/main.bicep -p bicep/env/prod.bicepparam
using '../main.bicep'

param environmentName = 'prod'
param catalogPath = 'examples/refinery/catalog.yaml'
param alertEmails = [
  'data-platform-oncall@example.com'
]

param catalogSettings = {
  DATABRICKS_HOST: 'https://adb-2222222222222222.2.azuredatabricks.net'
  SNOWFLAKE_ACCOUNT: 'myorg-prod'
  REFINERY_API_URL: 'https://refinery.example.com'
}
param keyVaultSecrets = {
  DATABRICKS_TOKEN: 'databricks-token'
  SNOWFLAKE_PASSWORD: 'snowflake-password'
  REFINERY_API_TOKEN: 'refinery-api-token'
}

param hostingPlan = 'FlexConsumption'
param instanceMemoryMB = 4096
param maximumInstanceCount = 100
param durableAlwaysReadyInstances = 1
param storageSku = 'Standard_ZRS'
param keyVaultPurgeProtection = true
param retentionDays = 90
param overdueMarginMinutes = 30
