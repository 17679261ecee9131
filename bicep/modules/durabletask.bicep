// The Durable Task Scheduler backend (durableBackend = 'durableTaskScheduler'): a scheduler, the
// task hub the app works in, a retention policy that purges finished instances (Tower's own run
// index keeps what operators look at), and the Durable Task Data Contributor role for the app.

@description('Name of the scheduler (3-64 letters, digits and hyphens).')
param name string

@description('Azure region of the scheduler.')
param location string

@description('Tags applied to the scheduler.')
param tags object

@description('Billing model of the scheduler: Consumption (pay per action) or Dedicated (capacity units).')
@allowed([
  'Consumption'
  'Dedicated'
])
param skuName string = 'Consumption'

@description('Capacity units for the Dedicated SKU (ignored for Consumption).')
@minValue(1)
param capacity int = 1

@description('Name of the task hub (the app setting TOWER_TASK_HUB, which host.json\'s hubName reads).')
param taskHubName string

@description('Days the scheduler keeps completed, failed and terminated orchestration instances before it purges them.')
@minValue(0)
param retentionDays int

@description('Addresses allowed to reach the scheduler (an empty list denies everything).')
param ipAllowlist array = [
  '0.0.0.0/0'
]

@description('Principal id of the app\'s managed identity, granted Durable Task Data Contributor.')
param principalId string

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    ipAllowlist: ipAllowlist
    sku: skuName == 'Dedicated' ? {
      name: skuName
      capacity: capacity
    } : {
      name: skuName
    }
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = {
  parent: scheduler
  name: taskHubName
}

resource retention 'Microsoft.DurableTask/schedulers/retentionPolicies@2025-11-01' = {
  parent: scheduler
  name: 'default'
  properties: {
    retentionPolicies: [
      {
        // every purgeable state (completed, failed, canceled, terminated)
        retentionPeriodInDays: retentionDays
      }
    ]
  }
}

var roles = [
  {
    // start, query, raise events and run orchestrations and activities in the task hub
    name: 'Durable Task Data Contributor'
    id: '0ad04412-c4d5-4796-b79c-f76d14c8d402'
  }
]

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roles: {
  name: guid(scheduler.id, principalId, role.id)
  scope: scheduler
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    description: '${role.name} for Tower'
  }
}]

@description('Endpoint of the scheduler, e.g. https://<name>.<region>.durabletask.io.')
output endpoint string = scheduler.properties.endpoint

@description('Name of the task hub.')
output taskHubName string = taskHub.name

@description('URL of the task hub\'s dashboard.')
output dashboardUrl string = taskHub.properties.dashboardUrl
