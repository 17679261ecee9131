// The Tower workbook in Azure Monitor: runs over time by status, run duration against the
// critical path, slowest and most failing services, per-platform concurrency and one run's
// services as a Gantt chart. Queries are the files in ../queries (explained in docs/monitoring.md).

@description('Display name of the workbook.')
param displayName string

@description('Azure region of the workbook.')
param location string

@description('Tags applied to the workbook.')
param tags object

@description('Resource id of the Application Insights component the workbook queries.')
param applicationInsightsId string

@description('Seed of the workbook\'s resource name (a GUID derived from it), e.g. the environment name.')
param nameSeed string

var source = 'microsoft.insights/components'

var panels = [
  {
    name: 'runs-by-status'
    title: 'Runs over time by status'
    query: loadTextContent('../queries/runs-by-status.kql')
    visualization: 'barchart'
    width: '50'
  }
  {
    name: 'duration-vs-critical-path'
    title: 'Run duration vs critical path (ratio 1.0 = as fast as the dependencies allow)'
    query: loadTextContent('../queries/run-duration-vs-critical-path.kql')
    visualization: 'table'
    width: '50'
  }
  {
    name: 'slowest-services'
    title: 'Slowest services'
    query: loadTextContent('../queries/slowest-services.kql')
    visualization: 'table'
    width: '50'
  }
  {
    name: 'failing-services'
    title: 'Most failing services'
    query: loadTextContent('../queries/failing-services.kql')
    visualization: 'table'
    width: '50'
  }
  {
    name: 'platform-concurrency'
    title: 'Services running at once, per platform'
    query: loadTextContent('../queries/platform-concurrency.kql')
    visualization: 'timechart'
    width: '100'
  }
]

var parameterItem = {
  type: 9
  name: 'parameters'
  content: {
    version: 'KqlParameterItem/1.0'
    style: 'pills'
    queryType: 0
    resourceType: source
    parameters: [
      {
        id: guid(nameSeed, 'TimeRange')
        version: 'KqlParameterItem/1.0'
        name: 'TimeRange'
        label: 'Time range'
        type: 4
        isRequired: true
        value: {
          durationMs: 604800000
        }
        typeSettings: {
          allowCustom: true
          selectableValues: [
            { durationMs: 86400000 }
            { durationMs: 604800000 }
            { durationMs: 2592000000 }
          ]
        }
      }
      {
        id: guid(nameSeed, 'RunId')
        version: 'KqlParameterItem/1.0'
        name: 'RunId'
        label: 'Run id (for the Gantt chart)'
        type: 1
        isRequired: false
        value: ''
      }
    ]
  }
}

var queryItems = [for panel in panels: {
  type: 3
  name: panel.name
  customWidth: panel.width
  content: {
    version: 'KqlItem/1.0'
    title: panel.title
    query: panel.query
    size: 0
    queryType: 0
    resourceType: source
    timeContextFromParameter: 'TimeRange'
    visualization: panel.visualization
  }
}]

var gantt = {
  type: 3
  name: 'run-gantt'
  conditionalVisibility: {
    parameterName: 'RunId'
    comparison: 'isNotEqualTo'
    value: ''
  }
  content: {
    version: 'KqlItem/1.0'
    title: 'Run {RunId}: services over time'
    query: loadTextContent('../queries/run-gantt.kql')
    size: 0
    queryType: 0
    resourceType: source
    timeContextFromParameter: 'TimeRange'
    visualization: 'table'
  }
}

var header = {
  type: 1
  name: 'header'
  content: {
    json: '## Tower\nRuns, services and platforms from Tower\'s telemetry. Enter a run id to see its services as a Gantt chart; docs/monitoring.md explains every panel.'
  }
}

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat([header, parameterItem], queryItems, [gantt])
  isLocked: false
  fallbackResourceIds: [
    applicationInsightsId
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, nameSeed, 'tower-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: string(workbookContent)
  }
}

@description('Resource id of the workbook.')
output resourceId string = workbook.id
