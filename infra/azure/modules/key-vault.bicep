// Key Vault for refresh tokens, client secrets, the data key and the operator key.
// Access is Azure RBAC only (no access policies); soft delete and purge protection keep
// every deleted secret recoverable for the retention period.

@description('Key Vault name: 3-24 letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object = {}

@description('Enabled: reachable over its public endpoint (still RBAC-protected). Disabled needs private networking, which this template does not create: the app and Key Vault references would lose access.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('Days a deleted secret (or the deleted vault) stays recoverable. Cannot be changed after creation.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('true: recover a soft-deleted vault of the same name instead of creating one (purge protection forbids purging it).')
param recoverSoftDeleted bool = false

@description('Name of the secret that holds BROKER_OPERATOR_KEY.')
param operatorKeyName string = 'broker-operator-key'

@description('Operator key(s) for /api/manage/*, comma-separated during a rotation; at least 32 characters each.')
@secure()
@minLength(32)
param operatorKey string

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    createMode: recoverSoftDeleted ? 'recover' : 'default'
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Once on, purge protection cannot be turned off, and deleted secrets cannot be purged early.
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
      bypass: 'AzureServices'
    }
  }
}

// Written through Azure Resource Manager (control plane), so the deployment needs no data-plane role.
resource operatorKeySecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: operatorKeyName
  properties: {
    value: operatorKey
    contentType: 'text/plain; BROKER_OPERATOR_KEY, comma-separated operator keys'
    attributes: {
      enabled: true
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
output operatorKeyName string = operatorKeySecret.name
// Versioned on purpose: a new value changes the app setting, which restarts the app and
// makes it read the new key at once instead of within App Service's 24-hour refresh.
output operatorKeyUriWithVersion string = operatorKeySecret.properties.secretUriWithVersion
