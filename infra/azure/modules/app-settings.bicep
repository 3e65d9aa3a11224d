// Every app setting of the function app, in one place. Deployed after the role
// assignments so the managed identity can already resolve the Key Vault reference and
// reach host storage when the app restarts with these settings.
//
// This resource replaces the whole app settings collection: a setting added by hand in
// the portal disappears at the next `azd provision`. Add it here (or as a parameter) instead.
// Settings not listed keep the defaults of shared/config.ts (see local.settings.example.json).

param functionAppName string
param storageAccountName string

@description('Table service endpoint of the storage account (https://<account>.table.core.windows.net/).')
param tableEndpoint string

@description('Key Vault URI (https://<vault>.vault.azure.net/).')
param keyVaultUri string

@description('Versioned URI of the secret that holds the operator key(s).')
param operatorKeyUri string

@description('Public base URL (https, no trailing slash); the redirect URI is <publicUrl>/api/oauth/callback.')
param publicUrl string

@description('Where operator alerts go. Empty: not set.')
param operatorEmail string = ''

@description('Connection id (or mailbox) whose mailbox sends alert emails. Empty: not set; alerts are stored and logged.')
param alertSender string = ''

param applicationInsightsConnectionString string

resource site 'Microsoft.Web/sites@2024-11-01' existing = {
  name: functionAppName
}

// The Functions platform's own settings. FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION
// are deliberately absent: Flex Consumption takes the runtime from functionAppConfig.
var platformSettings = {
  // Host storage through the managed identity; no connection string, no account key.
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  // The host sends telemetry with the system-assigned identity (Monitoring Metrics Publisher).
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  // No Functions landing page on the root URL; the broker lives under /api.
  AzureWebJobsDisableHomepage: 'true'
}

// What shared/config.ts requires when it runs in Azure.
var brokerSettings = {
  BROKER_PUBLIC_URL: publicUrl
  BROKER_OPERATOR_KEY: '@Microsoft.KeyVault(SecretUri=${operatorKeyUri})'
  BROKER_TABLES_URL: tableEndpoint
  BROKER_KEY_VAULT_URL: keyVaultUri
}

var operatorEmailSettings = empty(operatorEmail) ? {} : {
  BROKER_OPERATOR_EMAIL: operatorEmail
}

var alertSenderSettings = empty(alertSender) ? {} : {
  BROKER_ALERT_SENDER: alertSender
}

resource appSettings 'Microsoft.Web/sites/config@2024-11-01' = {
  parent: site
  name: 'appsettings'
  properties: union(platformSettings, brokerSettings, operatorEmailSettings, alertSenderSettings)
}
