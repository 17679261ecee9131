// Log Analytics and a workspace-based Application Insights. Local authentication is disabled: the
// instrumentation key alone cannot ingest, only an Entra ID token of an identity holding
// Monitoring Metrics Publisher can (the app sets APPLICATIONINSIGHTS_AUTHENTICATION_STRING).

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Azure region of both resources.')
param location string

@description('Tags applied to both resources.')
param tags object

@description('Days Log Analytics keeps data (30-730).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Principal id of the app\'s managed identity, granted Monitoring Metrics Publisher to ingest telemetry.')
param principalId string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

var roles = [
  {
    // Entra ID ingestion: the only way in with local auth disabled
    name: 'Monitoring Metrics Publisher'
    id: '3913510d-42f4-4e42-8a64-420c390055eb'
  }
]

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roles: {
  name: guid(appInsights.id, principalId, role.id)
  scope: appInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    description: '${role.name} for Tower'
  }
}]

@description('Resource id of the Application Insights component (scope of the alerts and the workbook).')
output applicationInsightsId string = appInsights.id

@description('Name of the Application Insights component.')
output applicationInsightsName string = appInsights.name

// Not a secret: it names the component and its ingestion endpoint. With local auth disabled it
// cannot ingest anything without an Entra ID token.
@description('Application Insights connection string (instrumentation key and endpoints; ingestion still needs an Entra ID token).')
output applicationInsightsConnectionString string = appInsights.properties.ConnectionString

@description('Resource id of the Log Analytics workspace.')
output logAnalyticsId string = workspace.id
