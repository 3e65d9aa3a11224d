// Log Analytics workspace and the workspace-based Application Insights component the
// Functions host (and the broker's own telemetry) writes to.

@description('Log Analytics workspace name.')
param logAnalyticsName string

@description('Application Insights component name.')
param applicationInsightsName string

param location string
param tags object = {}

@description('Days Log Analytics keeps data (30 is the minimum and is included in the ingestion price).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('true: only Microsoft Entra authenticated telemetry is accepted (the app sends it with its managed identity and the Monitoring Metrics Publisher role). In-code exporters must then pass a credential too.')
param disableLocalAuth bool = true

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

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    // Workspace-based: the data lives in the Log Analytics workspace above.
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: disableLocalAuth
  }
}

output applicationInsightsName string = applicationInsights.name
// The connection string identifies the component; it is not a credential when local auth is disabled.
output applicationInsightsConnectionString string = applicationInsights.properties.ConnectionString
output logAnalyticsWorkspaceId string = workspace.id
