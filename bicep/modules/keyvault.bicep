// Key Vault for the platform secrets Tower's catalog references (Snowflake password or private
// key, Databricks token when a workspace cannot use the managed identity, HTTP API tokens). RBAC
// mode, no access policies. The template creates no secret and never sees a value: operators put
// them in (docs/deploy.md), the app reads them through Key Vault references in its settings.

@description('Name of the vault (3-24 letters, digits and hyphens, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the vault.')
param location string

@description('Tags applied to the vault.')
param tags object

@description('Days a deleted secret can be recovered (7-90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Purge protection: a deleted vault or secret cannot be purged before its retention ends. Cannot be turned off once on; use it in production.')
param enablePurgeProtection bool = false

@description('Principal id of the app\'s managed identity, granted Key Vault Secrets User (read secret values).')
param principalId string

@description('Optional principal id (user or group) granted Key Vault Secrets Officer to put the secrets in; empty for none.')
param secretsOfficerPrincipalId string = ''

@description('Principal type of secretsOfficerPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param secretsOfficerPrincipalType string = 'User'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Key Vault refuses `false` here: leave the property out rather than turn it off.
    enablePurgeProtection: enablePurgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

var appRoles = [
  {
    // Key Vault references in the app settings resolve with the app's identity
    name: 'Key Vault Secrets User'
    id: '4633458b-17de-408a-b874-0445c86b69e6'
  }
]

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in appRoles: {
  name: guid(vault.id, principalId, role.id)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    description: '${role.name} for Tower'
  }
}]

var officerRoles = empty(secretsOfficerPrincipalId) ? [] : [
  {
    // whoever deploys puts the secrets in (docs/deploy.md); the app itself only reads them
    name: 'Key Vault Secrets Officer'
    id: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  }
]

resource officerAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in officerRoles: {
  name: guid(vault.id, secretsOfficerPrincipalId, role.id)
  scope: vault
  properties: {
    principalId: secretsOfficerPrincipalId
    principalType: secretsOfficerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    description: '${role.name} for whoever deploys Tower'
  }
}]

@description('Name of the vault.')
output name string = vault.name

@description('URI of the vault, e.g. https://<name>.vault.azure.net/.')
output vaultUri string = vault.properties.vaultUri
