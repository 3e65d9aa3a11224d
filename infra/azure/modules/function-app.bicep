// The Flex Consumption plan and the function app, with a system-assigned managed identity.
// App settings are applied by app-settings.bicep once the identity has its roles, so the
// Key Vault reference and the host storage connection work on the first start.

@description('Function app name; also the default host name <name>.azurewebsites.net. Keep it at most 32 characters (host ID).')
@minLength(2)
@maxLength(32)
param name string

@description('Flex Consumption plan name.')
param planName string

param location string
param tags object = {}

@description('azd service name in azure.yaml; azd finds the app to deploy to by this tag.')
param serviceName string = 'broker'

@description('Blob container URL (https://<account>.blob.core.windows.net/<container>) of the deployment packages.')
param deploymentContainerUrl string

@description('Memory of each instance. 2048 MB is the default size; 512 MB is the cheapest.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of instances the app scales out to (a cost ceiling).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

resource plan 'Microsoft.Web/serverfarms@2024-11-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // Linux, the only OS of Flex Consumption.
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-11-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    keyVaultReferenceIdentity: 'SystemAssigned'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      // Replaces FUNCTIONS_WORKER_RUNTIME and the Node version app settings, which Flex Consumption does not use.
      runtime: {
        name: 'node'
        version: '22'
      }
    }
  }
}

// No user name/password publishing: azd and the Azure CLI deploy with Microsoft Entra tokens.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
output principalId string = site.identity.principalId
