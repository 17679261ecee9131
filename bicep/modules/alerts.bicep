// Alerts over Tower's telemetry (customEvents of the telemetry contract, see docs/monitoring.md)
// and the action group they notify. Each rule's query is a file in ../queries, the same text the
// monitoring guide shows, so what the portal runs and what the docs explain cannot drift apart.
//
// Alert rules are stateful (autoMitigate): one notification when a rule fires for a pipeline or a
// service, none while it stays fired, and a resolution when its window is clear again.

@description('Prefix of the alert rule names, e.g. the environment name.')
param namePrefix string

@description('Name of the action group.')
param actionGroupName string

@description('Azure region of the alert rules (the region of Application Insights).')
param location string

@description('Tags applied to the action group and the rules.')
param tags object

@description('Resource id of the Application Insights component the rules query.')
param applicationInsightsId string

@description('Email addresses notified by the alerts; empty for an action group without receivers.')
param alertEmails array

@description('Minutes past a run\'s expected end before the overdue alert fires.')
@minValue(1)
param overdueMarginMinutes int = 30

@description('Whether the rules are enabled (turn them off in a throwaway environment).')
param enabled bool = true

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take(replace(namePrefix, '-', ''), 12)
    enabled: true
    emailReceivers: [for (email, i) in alertEmails: {
      name: 'email-${i}'
      emailAddress: email
      useCommonAlertSchema: true
    }]
  }
}

var rules = [
  {
    key: 'run-failed'
    displayName: 'Tower: a run failed'
    description: 'A pipeline run ended failed. See docs/monitoring.md, "A run failed".'
    severity: 1
    query: loadTextContent('../queries/alert-run-failed.kql')
    operator: 'GreaterThan'
    threshold: 0
    frequency: 'PT5M'
    window: 'PT10M' // twice the frequency: an event ingested a few minutes late is still seen
    lookback: ''
    dimension: 'pipeline'
  }
  {
    key: 'service-failed'
    displayName: 'Tower: a service failed after its retries'
    description: 'A service failed on its last attempt. See docs/monitoring.md, "A service failed".'
    severity: 2
    query: loadTextContent('../queries/alert-service-failed.kql')
    operator: 'GreaterThan'
    threshold: 0
    frequency: 'PT5M'
    window: 'PT10M'
    lookback: ''
    dimension: 'service'
  }
  {
    key: 'run-overdue'
    displayName: 'Tower: a run is past its expected end'
    description: 'A run is still going ${overdueMarginMinutes} minutes after its expected end. See docs/monitoring.md, "A run is overdue".'
    severity: 2
    query: replace(loadTextContent('../queries/alert-run-overdue.kql'), '{MarginMinutes}', string(overdueMarginMinutes))
    operator: 'GreaterThan'
    threshold: 0
    frequency: 'PT15M'
    window: 'PT15M'
    lookback: 'P2D' // the query looks at runs started in the last 2 days
    dimension: 'pipeline'
  }
  {
    key: 'no-tick'
    displayName: 'Tower: the app is not ticking'
    description: 'No schedule tick in 5 minutes: schedules are not being evaluated. See docs/monitoring.md, "The app is not ticking".'
    severity: 1
    query: loadTextContent('../queries/alert-no-tick.kql')
    operator: 'LessThan'
    threshold: 1
    frequency: 'PT5M'
    window: 'PT5M'
    lookback: ''
    dimension: ''
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: '${namePrefix}-${rule.key}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: enabled
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    overrideQueryTimeRange: empty(rule.lookback) ? null : rule.lookback
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: rule.operator
          threshold: rule.threshold
          dimensions: empty(rule.dimension) ? [] : [
            {
              name: rule.dimension
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

@description('Resource id of the action group.')
output actionGroupId string = actionGroup.id

@description('Names of the alert rules.')
output alertRuleNames array = [for (rule, i) in rules: alertRules[i].name]
