// Mail OAuth Broker on Azure: a Flex Consumption function app with a system-assigned
// managed identity, one Storage account (host storage, deployment packages, broker
// tables), Key Vault (RBAC, soft delete, purge protection), Log Analytics + Application
// Insights, and least-privilege role assignments. `azd up` provisions and deploys it;
// docs/deploy.md explains the parameters.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds the unique resource names.')
param environmentName string

@minLength(1)
@description('Azure region of every resource. It must offer Flex Consumption: az functionapp list-flexconsumption-locations.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group name. Empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Public base URL of the broker (https). Links and the redirect URI <publicUrl>/api/oauth/callback derive from it. Empty: https://<function app default host name>. Set it when a custom domain or a gateway fronts the app.')
param publicUrl string = ''

@description('Operator key(s) for /api/manage/*, at least 32 characters each, comma-separated during a rotation. Stored in Key Vault; the app reads it through a Key Vault reference. azd generates one when BROKER_OPERATOR_KEY is not set.')
@secure()
@minLength(32)
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 48
      noSpecial: true
    }
  }
})
param operatorKey string

@description('Where operator alerts go (BROKER_OPERATOR_EMAIL). Empty: not set.')
param operatorEmail string = ''

@description('Connection id (or its mailbox) whose mailbox sends alert emails (BROKER_ALERT_SENDER). Empty: not set.')
param alertSender string = ''

@description('Object id of the operator (azd passes the signed-in principal); gets read access to the operator key secret only. Empty: none.')
param operatorPrincipalId string = ''

@description('Key Vault public network access. Disabled requires private endpoints and virtual network integration, which this template does not create.')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('true: recover a soft-deleted Key Vault of the same name (after azd down of this environment).')
param keyVaultRecoverSoftDeleted bool = false

@description('Memory per instance of the Flex Consumption app.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Maximum number of instances (a cost ceiling).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Storage redundancy.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('true: Application Insights accepts only Microsoft Entra authenticated telemetry.')
param applicationInsightsDisableLocalAuth bool = true

var tags = {
  'azd-env-name': environmentName
  application: 'mail-oauth-broker'
}

// Deterministic per subscription, environment and region, so re-provisioning finds the same resources.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var functionAppName = 'func-broker-${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    disableLocalAuth: applicationInsightsDisableLocalAuth
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
  }
}

module keyVault 'modules/key-vault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    publicNetworkAccess: keyVaultPublicNetworkAccess
    recoverSoftDeleted: keyVaultRecoverSoftDeleted
    operatorKey: operatorKey
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'broker'
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
}

module roles 'modules/role-assignments.bicep' = {
  name: 'role-assignments'
  scope: rg
  params: {
    principalId: functionApp.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    operatorKeyName: keyVault.outputs.operatorKeyName
    operatorPrincipalId: operatorPrincipalId
  }
}

// The same normalisation as shared/config.ts: no trailing slash, so links never get '//'.
var requestedPublicUrl = empty(publicUrl) ? 'https://${functionApp.outputs.defaultHostName}' : publicUrl
var effectivePublicUrl = endsWith(requestedPublicUrl, '/') ? substring(requestedPublicUrl, 0, length(requestedPublicUrl) - 1) : requestedPublicUrl

module appSettings 'modules/app-settings.bicep' = {
  name: 'app-settings'
  scope: rg
  params: {
    functionAppName: functionApp.outputs.name
    storageAccountName: storage.outputs.name
    tableEndpoint: storage.outputs.tableEndpoint
    keyVaultUri: keyVault.outputs.uri
    operatorKeyUri: keyVault.outputs.operatorKeyUriWithVersion
    publicUrl: effectivePublicUrl
    operatorEmail: operatorEmail
    alertSender: alertSender
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
  }
  // The identity must hold its roles before the app restarts with the Key Vault reference.
  dependsOn: [
    roles
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
// azd stores outputs in the environment; BROKER_PUBLIC_URL then keeps its value on the next provision.
output BROKER_PUBLIC_URL string = effectivePublicUrl
// Register exactly this as a Web redirect URI of the Microsoft app (docs/microsoft-app.md).
output BROKER_REDIRECT_URI string = '${effectivePublicUrl}/api/oauth/callback'
