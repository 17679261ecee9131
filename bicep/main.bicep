// Tower in one resource group: a Function App (Flex Consumption by default) with a user-assigned
// managed identity, its storage, Service Bus, Key Vault, Application Insights, optionally the
// Durable Task Scheduler, alerts and a workbook. One module per concern, in ./modules.
// Deploy with `azd up` or `az deployment group create` (docs/deploy.md).

targetScope = 'resourceGroup'

@description('Name of the environment (dev, test, prod, or an azd environment name): part of every resource name and the `azd-env-name` tag.')
@minLength(1)
@maxLength(20)
param environmentName string

@description('Azure region of every resource (Flex Consumption and the Durable Task Scheduler are not in every region).')
param location string = resourceGroup().location

@description('Path of the catalog file inside the deployed app, relative to the app root (the project folder), e.g. catalog.yaml.')
param catalogPath string

@description('Email addresses the alerts notify.')
param alertEmails array

@description('Hosting plan of the Function App.')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param hostingPlan string = 'FlexConsumption'

@description('Flex Consumption: memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('The most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: always-ready instances of the `durable` group.')
@minValue(0)
param durableAlwaysReadyInstances int = 1

@description('Elastic Premium: plan SKU (used when hostingPlan is ElasticPremium).')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param elasticPremiumSku string = 'EP1'

@description('Durable Functions backend: Azure Storage (the app\'s storage account) or the Durable Task Scheduler.')
@allowed([
  'azureStorage'
  'durableTaskScheduler'
])
param durableBackend string = 'azureStorage'

@description('Durable Task Scheduler SKU (used when durableBackend is durableTaskScheduler).')
@allowed([
  'Consumption'
  'Dedicated'
])
param durableTaskSchedulerSku string = 'Consumption'

@description('Name of the Durable task hub. Changing it starts an empty hub (docs/deploy.md, Upgrading).')
@minLength(3)
@maxLength(45)
param taskHubName string = 'TowerHub'

@description('Azure Storage backend: the longest wait between polls of an idle task hub queue (hh:mm:ss); shorter is faster after quiet spells and costs more queue transactions.')
param maxQueuePollingInterval string = '00:00:05'

@description('Azure Storage backend: control-queue partitions (1-16); read only when a task hub is created.')
@minValue(1)
@maxValue(16)
param partitionCount int = 16

@description('Orchestrator episodes one instance runs at once.')
@minValue(1)
param maxConcurrentOrchestratorFunctions int = 32

@description('Days Tower keeps finished runs (and the Durable Task Scheduler its finished instances).')
@minValue(1)
param retentionDays int = 30

@description('Replication of the storage account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Deliveries of one event before Service Bus dead-letters it.')
@minValue(1)
param eventsMaxDeliveryCount int = 5

@description('Key Vault purge protection (irreversible; for production).')
param keyVaultPurgeProtection bool = false

@description('App settings resolved from Key Vault: setting name -> secret name (the catalog reads the setting as ${NAME}).')
param keyVaultSecrets object = {}

@description('Plain app settings the catalog reads as ${NAME} (hosts, account names: no secrets).')
param catalogSettings object = {}

@description('Object id of a user or group allowed to put secrets into the Key Vault (Key Vault Secrets Officer); empty for none. azd passes the signed-in user.')
param secretsOfficerPrincipalId string = ''

@description('Principal type of secretsOfficerPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param secretsOfficerPrincipalType string = 'User'

@description('Client id of an Entra ID app registration that protects the HTTP API (App Service Authentication); empty for function keys only.')
param authClientId string = ''

@description('Minutes past a run\'s expected end before the overdue alert fires.')
@minValue(1)
param overdueMarginMinutes int = 30

@description('Whether the alert rules are enabled.')
param alertsEnabled bool = true

@description('Tags added to every resource.')
param tags object = {}

// Names: a short hash of the subscription, resource group and environment keeps them unique and
// stable across deployments (the same inputs give the same names, so a redeploy updates in place).
var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var env = toLower(environmentName)
var allTags = union(tags, {
  'azd-env-name': environmentName
})
var tables = {
  ledger: 'towerledger'
  history: 'towerhistory'
  runs: 'towerruns'
  rejected: 'towerrejected'
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-tower-${env}-${token}'
    location: location
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${take(replace(env, '-', ''), 9)}${token}' // 3-24 lowercase letters and digits
    location: location
    tags: allTags
    skuName: storageSku
    deploymentContainerName: 'app-package'
    tableNames: [
      tables.ledger
      tables.history
      tables.runs
      tables.rejected
    ]
    principalId: identity.outputs.principalId
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-tower-${env}-${token}'
    applicationInsightsName: 'appi-tower-${env}-${token}'
    location: location
    tags: allTags
    principalId: identity.outputs.principalId
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    name: 'sb-tower-${env}-${token}'
    location: location
    tags: allTags
    eventsQueueName: 'tower-events'
    maxDeliveryCount: eventsMaxDeliveryCount
    notificationsTopicName: 'tower-notifications'
    principalId: identity.outputs.principalId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: 'kv${take(replace(env, '-', ''), 9)}${token}' // 3-24 characters, no trailing hyphen
    location: location
    tags: allTags
    enablePurgeProtection: keyVaultPurgeProtection
    principalId: identity.outputs.principalId
    secretsOfficerPrincipalId: secretsOfficerPrincipalId
    secretsOfficerPrincipalType: secretsOfficerPrincipalType
  }
}

module durableTask 'modules/durabletask.bicep' = if (durableBackend == 'durableTaskScheduler') {
  name: 'durabletask'
  params: {
    name: 'dts-tower-${env}-${token}'
    location: location
    tags: allTags
    skuName: durableTaskSchedulerSku
    taskHubName: taskHubName
    retentionDays: retentionDays
    principalId: identity.outputs.principalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: 'func-tower-${env}-${token}'
    planName: 'plan-tower-${env}-${token}'
    location: location
    tags: allTags
    hostingPlan: hostingPlan
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    durableAlwaysReadyInstances: durableAlwaysReadyInstances
    elasticPremiumSku: elasticPremiumSku
    identityResourceId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    tables: tables
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    serviceBusNamespace: serviceBus.outputs.fullyQualifiedNamespace
    eventsQueueName: serviceBus.outputs.eventsQueueName
    notificationsTopicName: serviceBus.outputs.notificationsTopicName
    taskHubName: taskHubName
    catalogPath: catalogPath
    retentionDays: retentionDays
    durableBackend: durableBackend
    durableTaskSchedulerEndpoint: durableBackend == 'durableTaskScheduler' ? durableTask!.outputs.endpoint : ''
    maxQueuePollingInterval: maxQueuePollingInterval
    partitionCount: partitionCount
    maxConcurrentOrchestratorFunctions: maxConcurrentOrchestratorFunctions
    keyVaultUri: keyVault.outputs.vaultUri
    keyVaultSecrets: keyVaultSecrets
    catalogSettings: catalogSettings
    authClientId: authClientId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    namePrefix: 'tower-${env}'
    actionGroupName: 'ag-tower-${env}-${token}'
    location: location
    tags: allTags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    alertEmails: alertEmails
    overdueMarginMinutes: overdueMarginMinutes
    enabled: alertsEnabled
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    displayName: 'Tower (${environmentName})'
    location: location
    tags: allTags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    nameSeed: environmentName
  }
}

// azd reads these outputs into its environment (names in upper case by convention).
@description('Name of the Function App (`func azure functionapp publish <name>`).')
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name

@description('Default host name of the Function App.')
output AZURE_FUNCTION_APP_HOST string = functionApp.outputs.defaultHostName

@description('Client id of the managed identity (add it to Databricks and Snowflake: docs/deploy.md).')
output TOWER_IDENTITY_CLIENT_ID string = identity.outputs.clientId

@description('Object id of the managed identity.')
output TOWER_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId

@description('Name of the Key Vault to put the platform secrets in.')
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name

@description('Fully qualified Service Bus namespace events are sent to.')
output SERVICE_BUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace

@description('Name of the Application Insights component.')
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName

@description('Name of the storage account.')
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name

@description('Durable Task Scheduler dashboard of the task hub (empty on the Azure Storage backend).')
output DURABLE_TASK_DASHBOARD_URL string = durableBackend == 'durableTaskScheduler' ? durableTask!.outputs.dashboardUrl : ''
