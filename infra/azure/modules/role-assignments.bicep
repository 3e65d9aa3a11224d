// Least-privilege roles of the function app's managed identity, each on one resource.
// Built-in role definition ids are the same in every subscription:
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles

@description('Object id of the function app\'s system-assigned managed identity.')
param principalId string

param storageAccountName string
param keyVaultName string
param applicationInsightsName string

@description('Name of the secret holding BROKER_OPERATOR_KEY.')
param operatorKeyName string

@description('Optional: object id of the person or pipeline that operates the broker; gets read access to the operator key secret only. Empty: no assignment.')
param operatorPrincipalId string = ''

// Key Vault Secrets Officer: get, list, set, delete and recover secrets; no keys, certificates or access management.
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

// Key Vault Secrets User: read secret values.
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

// Storage Table Data Contributor: create tables and read/write/delete entities.
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

// Storage Blob Data Owner: what the Functions host needs for AzureWebJobsStorage (leases, locks, keys) and the Flex deployment container.
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'

// Monitoring Metrics Publisher: send telemetry to Application Insights with Microsoft Entra authentication.
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

// Not assigned: Storage Queue Data Contributor. HTTP and timer triggers on Flex Consumption
// use no queues (only blob triggers and Durable Functions do).

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' existing = {
  name: keyVaultName
}

resource operatorKeySecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' existing = {
  parent: vault
  name: operatorKeyName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, keyVaultSecretsOfficerRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Broker: refresh tokens, client secrets, data key (and the operator key reference).'
  }
}

resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageTableDataContributorRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributorRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Broker: apps, tenants, connections and the other broker tables (BROKER_TABLES_URL).'
  }
}

resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageBlobDataOwnerRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Functions host storage (AzureWebJobsStorage) and the deployment package container.'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, principalId, monitoringMetricsPublisherRoleId)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Telemetry with Microsoft Entra authentication (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).'
  }
}

// Scoped to the one secret, not the vault: the operator can read the operator key, not tokens.
resource operatorKeyReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(operatorKeySecret.id, operatorPrincipalId, keyVaultSecretsUserRoleId)
  scope: operatorKeySecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: operatorPrincipalId
    description: 'Operator: read BROKER_OPERATOR_KEY.'
  }
}
