"""The FHIR R4 layer every service mounts: store, validation, REST, search, capability."""
