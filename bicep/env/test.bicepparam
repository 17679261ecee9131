// test: like production in shape (same backend, same alerts), smaller in scale.
// az deployment group create -g <rg> -f bicep/main.bicep -p bicep/env/test.bicepparam
using '../main.bicep'

param environmentName = 'test'
param catalogPath = 'examples/refinery/catalog.yaml'
param alertEmails = [
  'data-platform-test@example.com'
]

param catalogSettings = {
  DATABRICKS_HOST: 'https://adb-1111111111111111.1.azuredatabricks.net'
  SNOWFLAKE_ACCOUNT: 'myorg-test'
  REFINERY_API_URL: 'https://refinery-test.example.com'
}
param keyVaultSecrets = {
  DATABRICKS_TOKEN: 'databricks-token'
  SNOWFLAKE_PASSWORD: 'snowflake-password'
  REFINERY_API_TOKEN: 'refinery-api-token'
}

param maximumInstanceCount = 40
param retentionDays = 30
