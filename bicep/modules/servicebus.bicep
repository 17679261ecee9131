// Service Bus: the events queue Tower's `on_event` trigger listens on, and the notifications
// topic (with a sample subscription) for whoever wants to hear about runs. Local (SAS)
// authentication is disabled; the app's roles are scoped to the two entities, not the namespace.

@description('Name of the Service Bus namespace (globally unique).')
param name string

@description('Azure region of the namespace.')
param location string

@description('Tags applied to the namespace.')
param tags object

@description('Namespace tier: Standard is the lowest with topics; Premium for isolation and larger messages.')
@allowed([
  'Standard'
  'Premium'
])
param skuName string = 'Standard'

@description('Name of the events queue (the app setting TOWER_EVENTS_QUEUE).')
param eventsQueueName string

@description('Deliveries of one message before Service Bus dead-letters it (MaxDeliveryCountExceeded). A message Tower can never handle is tried this many times.')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int = 5

// Short on purpose: it drops a publisher's retry of a send, which comes within seconds or minutes;
// a longer window would also drop a redrive of a rejected event (same message id) after its fix.
// A late duplicate is harmless anyway: the run id derives from the message id.
@description('Window in which a resent message id is dropped as a duplicate (ISO 8601 duration, at most 7 days).')
param duplicateDetectionWindow string = 'PT10M'

@description('Name of the notifications topic (the app setting TOWER_NOTIFICATIONS_TOPIC).')
param notificationsTopicName string

@description('Name of the sample subscription on the notifications topic.')
param sampleSubscriptionName string = 'all'

@description('Principal id of the app\'s managed identity.')
param principalId string

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuName
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource eventsQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: eventsQueueName
  properties: {
    // a publisher that resends an event with the same message id is dropped here, before Tower
    // (Tower also derives the run id from the message id, so a duplicate never starts twice)
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    deadLetteringOnMessageExpiration: true
    maxDeliveryCount: maxDeliveryCount
    // the trigger renews the lock up to host.json's maxAutoLockRenewalDuration (5 min)
    lockDuration: 'PT1M'
    defaultMessageTimeToLive: 'P14D'
  }
}

resource notificationsTopic 'Microsoft.ServiceBus/namespaces/topics@2022-10-01-preview' = {
  parent: namespace
  name: notificationsTopicName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    defaultMessageTimeToLive: 'P7D'
  }
}

resource sampleSubscription 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2022-10-01-preview' = {
  parent: notificationsTopic
  name: sampleSubscriptionName
  properties: {
    deadLetteringOnMessageExpiration: true
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
  }
}

var queueRoles = [
  {
    // the `on_event` trigger receives (and completes or abandons) the events
    name: 'Azure Service Bus Data Receiver'
    id: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  }
  {
    // POST /api/events puts an event on the queue as the app (triggers/events.py)
    name: 'Azure Service Bus Data Sender'
    id: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  }
]

var topicRoles = [
  {
    // run notifications (TOWER_NOTIFICATIONS_TOPIC, tower/notify.py)
    name: 'Azure Service Bus Data Sender'
    id: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  }
]

resource queueRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in queueRoles: {
  name: guid(eventsQueue.id, principalId, role.id)
  scope: eventsQueue
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    description: '${role.name} for Tower'
  }
}]

resource topicRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in topicRoles: {
  name: guid(notificationsTopic.id, principalId, role.id)
  scope: notificationsTopic
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.id)
    description: '${role.name} for Tower'
  }
}]

@description('Name of the namespace.')
output name string = namespace.name

// serviceBusEndpoint is https://<name>.servicebus.windows.net:443/ (another suffix in sovereign clouds)
@description('Fully qualified namespace host, e.g. <name>.servicebus.windows.net (ServiceBusConnection__fullyQualifiedNamespace).')
output fullyQualifiedNamespace string = split(split(replace(namespace.properties.serviceBusEndpoint, 'https:', ''), '/')[2], ':')[0]

@description('Name of the events queue.')
output eventsQueueName string = eventsQueue.name

@description('Name of the notifications topic.')
output notificationsTopicName string = notificationsTopic.name
