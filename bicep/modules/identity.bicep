// The one user-assigned managed identity Tower uses for everything: host storage, its tables,
// Service Bus, Key Vault, Application Insights ingestion, the Durable Task Scheduler and the
// platforms it calls (Databricks, HTTP services). A user-assigned identity outlives the app, so a
// redeployed or replaced Function App keeps every grant.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region of the identity.')
param location string

@description('Tags applied to the identity.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity (for `identity.userAssignedIdentities` and Key Vault references).')
output resourceId string = identity.id

@description('Client (application) id of the identity: what `AZURE_CLIENT_ID` and the `__clientId` settings carry.')
output clientId string = identity.properties.clientId

@description('Object (principal) id of the identity: what role assignments grant to.')
output principalId string = identity.properties.principalId

@description('Name of the identity.')
output name string = identity.name
