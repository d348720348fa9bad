"""FHIR R4 (4.0.1) code tables that validation needs and fhir.resources does not enforce.

fhir.resources checks that a `code` is a string; it does not check required bindings
(and its models are R4B, 4.3.0). The value sets here are copied from the R4 specification,
http://hl7.org/fhir/R4/valueset-<name>.html, for the elements of the types the suite owns
and for the data types those resources embed.
"""
from __future__ import annotations

# http://hl7.org/fhir/R4/resourcelist.html (concrete types only).
R4_RESOURCE_TYPES = frozenset("""
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse AuditEvent Basic Binary
    BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem
    ChargeItemDefinition Claim ClaimResponse ClinicalImpression CodeSystem Communication CommunicationRequest
    CompartmentDefinition Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest
    CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
    DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest
    EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario ExplanationOfBenefit
    FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy Immunization
    ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan Invoice Library Linkage List
    Location Measure MeasureReport Media Medication MedicationAdministration MedicationDispense MedicationKnowledge
    MedicationRequest MedicationStatement MedicinalProduct MedicinalProductAuthorization
    MedicinalProductContraindication MedicinalProductIndication MedicinalProductIngredient MedicinalProductInteraction
    MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder
    Observation ObservationDefinition OperationDefinition OperationOutcome Organization OrganizationAffiliation
    Parameters Patient PaymentNotice PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole
    Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson RequestGroup ResearchDefinition
    ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment RiskEvidenceSynthesis Schedule
    SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition StructureMap Subscription
    Substance SubstanceNucleicAcid SubstancePolymer SubstanceProtein SubstanceReferenceInformation
    SubstanceSourceMaterial SubstanceSpecification SupplyDelivery SupplyRequest Task TerminologyCapabilities
    TestReport TestScript ValueSet VerificationResult VisionPrescription
""".split())

ADMINISTRATIVE_GENDER = ("male", "female", "other", "unknown")
PUBLICATION_STATUS = ("draft", "active", "retired", "unknown")
# "question" is an abstract concept of the code system, not a usable item type.
ITEM_TYPE = (
    "group", "display", "boolean", "decimal", "integer", "date", "dateTime", "time", "string", "text", "url",
    "choice", "open-choice", "attachment", "reference", "quantity",
)
QUESTIONNAIRE_ANSWERS_STATUS = ("in-progress", "completed", "amended", "entered-in-error", "stopped")
QUESTIONNAIRE_ENABLE_OPERATOR = ("exists", "=", "!=", ">", "<", ">=", "<=")
QUESTIONNAIRE_ENABLE_BEHAVIOR = ("all", "any")
OBSERVATION_STATUS = (
    "registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown",
)
REQUEST_STATUS = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown")
REQUEST_INTENT = (
    "proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order", "instance-order",
    "option",
)
REQUEST_PRIORITY = ("routine", "urgent", "asap", "stat")
FLAG_STATUS = ("active", "inactive", "entered-in-error")
EPISODE_OF_CARE_STATUS = ("planned", "waitlist", "active", "onhold", "finished", "cancelled", "entered-in-error")
CARE_PLAN_INTENT = ("proposal", "plan", "order", "option")
CARE_PLAN_ACTIVITY_STATUS = (
    "not-started", "scheduled", "in-progress", "on-hold", "completed", "cancelled", "stopped", "unknown",
    "entered-in-error",
)
CARE_PLAN_ACTIVITY_KIND = (
    "Appointment", "CommunicationRequest", "DeviceRequest", "MedicationRequest", "NutritionOrder", "Task",
    "ServiceRequest", "VisionPrescription",
)
GOAL_STATUS = (
    "proposed", "planned", "accepted", "active", "on-hold", "completed", "cancelled", "entered-in-error", "rejected",
)
ENCOUNTER_STATUS = (
    "planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown",
)
ENCOUNTER_LOCATION_STATUS = ("planned", "active", "reserved", "completed")
CONSENT_STATE = ("draft", "proposed", "active", "rejected", "inactive", "entered-in-error")
CONSENT_PROVISION_TYPE = ("deny", "permit")
SUBSCRIPTION_STATUS = ("requested", "active", "error", "off")
SUBSCRIPTION_CHANNEL_TYPE = ("rest-hook", "websocket", "email", "sms", "message")
BUNDLE_TYPE = (
    "document", "message", "transaction", "transaction-response", "batch", "batch-response", "history", "searchset",
    "collection",
)
HTTP_VERB = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
SEARCH_ENTRY_MODE = ("match", "include", "outcome")
AUDIT_EVENT_ACTION = ("C", "R", "U", "D", "E")
AUDIT_EVENT_OUTCOME = ("0", "4", "8", "12")
NETWORK_TYPE = ("1", "2", "3", "4", "5")
PROVENANCE_ENTITY_ROLE = ("derivation", "revision", "quotation", "source", "removal")
TASK_STATUS = (
    "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress", "on-hold",
    "failed", "completed", "entered-in-error",
)
TASK_INTENT = (
    "unknown", "proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order",
    "option",
)
LINK_TYPE = ("replaced-by", "replaces", "refer", "seealso")
NARRATIVE_STATUS = ("generated", "extensions", "additional", "empty")
IDENTIFIER_USE = ("usual", "official", "temp", "secondary", "old")
NAME_USE = ("usual", "official", "temp", "nickname", "anonymous", "old", "maiden")
CONTACT_POINT_SYSTEM = ("phone", "fax", "email", "pager", "url", "sms", "other")
CONTACT_POINT_USE = ("home", "work", "temp", "old", "mobile")
ADDRESS_USE = ("home", "work", "temp", "old", "billing")
ADDRESS_TYPE = ("postal", "physical", "both")
QUANTITY_COMPARATOR = ("<", "<=", ">=", ">")
UNITS_OF_TIME = ("s", "min", "h", "d", "wk", "mo", "a")
DAYS_OF_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
GROUP_TYPE = ("person", "animal", "practitioner", "device", "medication", "substance")

# (fhir.resources model class name, JSON element name) -> the codes a required binding allows.
# Keyed by class, not path, so a binding holds wherever the element occurs: nested items,
# contained resources, Bundle entries.
REQUIRED_BINDINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Patient", "gender"): ADMINISTRATIVE_GENDER,
    ("Group", "type"): GROUP_TYPE,
    ("PatientContact", "gender"): ADMINISTRATIVE_GENDER,
    ("PatientLink", "type"): LINK_TYPE,
    ("Questionnaire", "status"): PUBLICATION_STATUS,
    ("QuestionnaireItem", "type"): ITEM_TYPE,
    ("QuestionnaireItem", "enableBehavior"): QUESTIONNAIRE_ENABLE_BEHAVIOR,
    ("QuestionnaireItemEnableWhen", "operator"): QUESTIONNAIRE_ENABLE_OPERATOR,
    ("QuestionnaireResponse", "status"): QUESTIONNAIRE_ANSWERS_STATUS,
    ("Observation", "status"): OBSERVATION_STATUS,
    ("ServiceRequest", "status"): REQUEST_STATUS,
    ("ServiceRequest", "intent"): REQUEST_INTENT,
    ("ServiceRequest", "priority"): REQUEST_PRIORITY,
    ("Flag", "status"): FLAG_STATUS,
    ("EpisodeOfCare", "status"): EPISODE_OF_CARE_STATUS,
    ("EpisodeOfCareStatusHistory", "status"): EPISODE_OF_CARE_STATUS,
    ("CarePlan", "status"): REQUEST_STATUS,
    ("CarePlan", "intent"): CARE_PLAN_INTENT,
    ("CarePlanActivityDetail", "status"): CARE_PLAN_ACTIVITY_STATUS,
    ("CarePlanActivityDetail", "kind"): CARE_PLAN_ACTIVITY_KIND,
    ("Goal", "lifecycleStatus"): GOAL_STATUS,
    ("Encounter", "status"): ENCOUNTER_STATUS,
    ("EncounterStatusHistory", "status"): ENCOUNTER_STATUS,
    ("EncounterLocation", "status"): ENCOUNTER_LOCATION_STATUS,
    ("Consent", "status"): CONSENT_STATE,
    ("ConsentProvision", "type"): CONSENT_PROVISION_TYPE,
    ("Subscription", "status"): SUBSCRIPTION_STATUS,
    ("SubscriptionChannel", "type"): SUBSCRIPTION_CHANNEL_TYPE,
    ("Bundle", "type"): BUNDLE_TYPE,
    ("BundleEntryRequest", "method"): HTTP_VERB,
    ("BundleEntrySearch", "mode"): SEARCH_ENTRY_MODE,
    ("AuditEvent", "action"): AUDIT_EVENT_ACTION,
    ("AuditEvent", "outcome"): AUDIT_EVENT_OUTCOME,
    ("AuditEventAgentNetwork", "type"): NETWORK_TYPE,
    ("ProvenanceEntity", "role"): PROVENANCE_ENTITY_ROLE,
    ("Task", "status"): TASK_STATUS,
    ("Task", "intent"): TASK_INTENT,
    ("Task", "priority"): REQUEST_PRIORITY,
    # Data types, wherever they appear.
    ("Narrative", "status"): NARRATIVE_STATUS,
    ("Identifier", "use"): IDENTIFIER_USE,
    ("HumanName", "use"): NAME_USE,
    ("ContactPoint", "system"): CONTACT_POINT_SYSTEM,
    ("ContactPoint", "use"): CONTACT_POINT_USE,
    ("Address", "use"): ADDRESS_USE,
    ("Address", "type"): ADDRESS_TYPE,
    ("Quantity", "comparator"): QUANTITY_COMPARATOR,
    ("TimingRepeat", "durationUnit"): UNITS_OF_TIME,
    ("TimingRepeat", "periodUnit"): UNITS_OF_TIME,
    ("TimingRepeat", "dayOfWeek"): DAYS_OF_WEEK,
}
