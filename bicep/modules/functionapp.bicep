// The Function App and its plan: Flex Consumption by default (Linux, Python 3.11, an always-ready
// instance for the `durable` group), Elastic Premium as the alternative. Every setting the code
// reads in Azure is set here (tests/deploy checks it against the Python sources), every
// connection is by the user-assigned identity, and no key or secret value appears: secrets come
// from Key Vault references resolved by the platform with the same identity.

@description('Name of the Function App (globally unique host name).')
param name string

@description('Name of the hosting plan.')
param planName string

@description('Azure region of the app and its plan.')
param location string

@description('Tags applied to the plan; the app also gets `azd-service-name: tower`.')
param tags object

@description('Hosting plan: Flex Consumption (default; scale to zero, always-ready instances) or Elastic Premium (pre-warmed instances, no cold start).')
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

@description('Flex Consumption: the most instances the app scales out to (40-1000); Elastic Premium: the most elastic workers.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: always-ready instances of the `durable` group (orchestrators, activities and entities). The Durable docs recommend 1 so the task hub is polled even when the app is idle.')
@minValue(0)
param durableAlwaysReadyInstances int = 1

@description('Elastic Premium: plan SKU.')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param elasticPremiumSku string = 'EP1'

@description('Resource id of the user-assigned managed identity.')
param identityResourceId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Name of the storage account of the host and the Azure Storage task hub.')
param storageAccountName string

@description('Table endpoint of that account, e.g. https://<account>.table.core.windows.net/.')
param tableEndpoint string

@description('URL of the blob container the Flex Consumption plan deploys the package from.')
param deploymentContainerUrl string

@description('Names of Tower\'s tables: ledger, history, runs, rejected.')
param tables object

@description('Application Insights connection string (names the component; ingestion still needs the identity).')
param applicationInsightsConnectionString string

@description('Service Bus fully qualified namespace, e.g. <name>.servicebus.windows.net.')
param serviceBusNamespace string

@description('Name of the events queue.')
param eventsQueueName string

@description('Name of the notifications topic.')
param notificationsTopicName string

@description('Durable task hub name (host.json reads it as %TOWER_TASK_HUB%). A new name starts an empty hub: see docs/deploy.md, Upgrading.')
param taskHubName string

@description('Path of the catalog file inside the deployed package, relative to the app root.')
param catalogPath string

@description('Days Tower keeps finished runs (its runs index; the Durable Task Scheduler retention policy uses the same).')
@minValue(1)
param retentionDays int

@description('Durable Functions backend: Azure Storage (the app\'s storage account) or the Durable Task Scheduler.')
@allowed([
  'azureStorage'
  'durableTaskScheduler'
])
param durableBackend string = 'azureStorage'

@description('Endpoint of the Durable Task Scheduler; used only when durableBackend is durableTaskScheduler.')
param durableTaskSchedulerEndpoint string = ''

@description('Azure Storage backend: the longest wait between polls of an idle task hub queue (hh:mm:ss).')
param maxQueuePollingInterval string = '00:00:05'

@description('Azure Storage backend: control-queue partitions of a new task hub (1-16; fixed once the hub exists).')
@minValue(1)
@maxValue(16)
param partitionCount int = 16

@description('Orchestrator episodes one instance runs at once.')
@minValue(1)
param maxConcurrentOrchestratorFunctions int = 32

@description('Activities one instance runs at once.')
@minValue(1)
param maxConcurrentActivityFunctions int = 32

@description('URI of the Key Vault holding the platform secrets, e.g. https://<vault>.vault.azure.net/.')
param keyVaultUri string

@description('App settings resolved from Key Vault: setting name -> secret name, e.g. {SNOWFLAKE_PASSWORD: \'snowflake-password\'}. The catalog reads them as ${SETTING}.')
param keyVaultSecrets object = {}

@description('Plain (non-secret) app settings the catalog reads as ${NAME}, e.g. DATABRICKS_HOST, SNOWFLAKE_ACCOUNT. Secrets belong in keyVaultSecrets.')
param catalogSettings object = {}

@description('Client id of an Entra ID app registration to require sign-in to the API (App Service Authentication); empty to leave the API on function keys only.')
param authClientId string = ''

@description('Tenant of that app registration.')
param authTenantId string = tenant().tenantId

var isFlex = hostingPlan == 'FlexConsumption'
var useScheduler = durableBackend == 'durableTaskScheduler'
var durableSetting = 'AzureFunctionsJobHost__extensions__durableTask'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'elastic'
  sku: isFlex ? {
    name: 'FC1'
    tier: 'FlexConsumption'
  } : {
    name: elasticPremiumSku
    tier: 'ElasticPremium'
  }
  properties: {
    reserved: true // Linux
    maximumElasticWorkerCount: isFlex ? null : maximumInstanceCount
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'tower'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references resolve with this identity, not a system-assigned one
    keyVaultReferenceIdentity: identityResourceId
    functionAppConfig: isFlex ? {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: [
          {
            name: 'durable'
            instanceCount: durableAlwaysReadyInstances
          }
        ]
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    } : null
    siteConfig: {
      linuxFxVersion: isFlex ? null : 'Python|3.11'
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
  }
}

// Settings every plan needs. Names are the ones the code and the host read.
var commonSettings = {
  // host storage (and the Azure Storage task hub) by identity: no account key anywhere
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // DefaultAzureCredential in Tower (tables, platforms) picks the user-assigned identity by this
  AZURE_CLIENT_ID: identityClientId
  // telemetry with Entra ID ingestion (local auth is disabled on the component)
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // the events trigger's `connection` (ServiceBusConnection) by identity
  ServiceBusConnection__fullyQualifiedNamespace: serviceBusNamespace
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identityClientId
  // Tower
  TOWER_TASK_HUB: taskHubName
  TOWER_CATALOG: catalogPath
  TOWER_LEDGER_TABLE_URL: '${tableEndpoint}${tables.ledger}'
  TOWER_HISTORY_TABLE_URL: '${tableEndpoint}${tables.history}'
  TOWER_RUNS_TABLE_URL: '${tableEndpoint}${tables.runs}'
  TOWER_REJECTED_TABLE_URL: '${tableEndpoint}${tables.rejected}'
  TOWER_EVENTS_QUEUE: eventsQueueName
  TOWER_NOTIFICATIONS_TOPIC: notificationsTopicName
  TOWER_RETENTION_DAYS: string(retentionDays)
  // Production Durable settings. host.json holds the same values (tests/deploy keeps these
  // defaults equal to it); as app settings, an environment can change them (main.bicep parameters)
  // without a new package.
  // An orchestration's episodes are short (they only read results and schedule the next step), so
  // one instance can run many at once; the extension's default of 10 (and 8 before) throttles wide stages
  '${durableSetting}__maxConcurrentOrchestratorFunctions': string(maxConcurrentOrchestratorFunctions)
  '${durableSetting}__maxConcurrentActivityFunctions': string(maxConcurrentActivityFunctions)
  // one tracking event per lifecycle step of every service_run and poll floods Application Insights
  // (and sampling then drops Tower's own telemetry); warnings and errors are what operators need
  'AzureFunctionsJobHost__logging__logLevel__Host.Triggers.DurableTask': 'Warning'
}

// Flex Consumption takes the runtime from functionAppConfig and refuses these settings. On
// Elastic Premium the app runs from the package a deployment uploads (no Azure Files content
// share, which would need an account key), built remotely from requirements.txt; they are set here
// so that a later provision does not remove what `func azure functionapp publish` set.
var elasticPremiumSettings = isFlex ? {} : {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: 'python'
  WEBSITE_RUN_FROM_PACKAGE: '1'
  SCM_DO_BUILD_DURING_DEPLOYMENT: 'true'
  ENABLE_ORYX_BUILD: 'true'
}

var storageBackendSettings = useScheduler ? {} : {
  // an idle queue is polled at most this far apart (default 30 s): each hop of a run (activity ->
  // control queue -> episode) after a quiet spell waits up to this long; the Durable docs advise
  // 10 s or less on Flex Consumption. Shorter costs more queue transactions.
  '${durableSetting}__storageProvider__maxQueuePollingInterval': maxQueuePollingInterval
  // concurrently active orchestrations app-wide = partitions x maxConcurrentOrchestratorFunctions;
  // the default 4 partitions queue wide stages (16 is the most). Read only when the task hub is created.
  '${durableSetting}__storageProvider__partitionCount': string(partitionCount)
}

var schedulerSettings = useScheduler ? {
  // switch the storage provider of host.json to the Durable Task Scheduler
  '${durableSetting}__storageProvider__type': 'azureManaged'
  '${durableSetting}__storageProvider__connectionStringName': 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING'
  // an endpoint and the identity to use: no secret in it
  DURABLE_TASK_SCHEDULER_CONNECTION_STRING: 'Endpoint=${durableTaskSchedulerEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}'
} : {}

var secretSettings = toObject(items(keyVaultSecrets), item => item.key, item => '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${item.value}/)')

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: app
  name: 'appsettings'
  properties: union(catalogSettings, secretSettings, elasticPremiumSettings, storageBackendSettings, schedulerSettings, commonSettings)
}

// Sign-in with Entra ID in front of the HTTP API (App Service Authentication). Only tokens issued
// for the app registration pass; the Durable extension's own endpoints stay behind function keys.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authClientId)) {
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/runtime/webhooks/durabletask'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            authClientId
            'api://${authClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

@description('Name of the Function App.')
output name string = app.name

@description('Default host name of the Function App, e.g. <name>.azurewebsites.net.')
output defaultHostName string = app.properties.defaultHostName

@description('Resource id of the Function App.')
output resourceId string = app.id
