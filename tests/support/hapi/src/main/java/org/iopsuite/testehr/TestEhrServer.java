package org.iopsuite.testehr;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.parser.StrictErrorHandler;
import ca.uhn.fhir.rest.annotation.RequiredParam;
import ca.uhn.fhir.rest.annotation.Search;
import ca.uhn.fhir.rest.annotation.Transaction;
import ca.uhn.fhir.rest.annotation.TransactionParam;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.api.MethodOutcome;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.param.TokenParam;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.exceptions.InvalidRequestException;
import ca.uhn.fhir.rest.server.exceptions.PreconditionFailedException;
import ca.uhn.fhir.rest.server.exceptions.ResourceNotFoundException;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.HashMapResourceProvider;
import ca.uhn.fhir.util.UrlUtil;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.ValidationResult;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.Date;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.Bundle.BundleEntryComponent;
import org.hl7.fhir.r4.model.Bundle.BundleType;
import org.hl7.fhir.r4.model.CarePlan;
import org.hl7.fhir.r4.model.Condition;
import org.hl7.fhir.r4.model.Consent;
import org.hl7.fhir.r4.model.Encounter;
import org.hl7.fhir.r4.model.EpisodeOfCare;
import org.hl7.fhir.r4.model.Goal;
import org.hl7.fhir.r4.model.Identifier;
import org.hl7.fhir.r4.model.Observation;
import org.hl7.fhir.r4.model.Patient;
import org.hl7.fhir.r4.model.Provenance;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.Resource;
import org.hl7.fhir.r4.model.ServiceRequest;

/**
 * Test EHR: a HAPI FHIR R4 plain server holding resources in memory, on http://127.0.0.1:PORT/fhir.
 * HAPI parses (strictly), validates (R4 core profiles and terminology, offline, plus the profiles of the FHIR
 * packages named, as a US EHR knows US Core) and stores; ours is only the identifier search and a minimal
 * system-level transaction, which HashMapResourceProvider lacks.
 * Usage: java -cp test-ehr.jar:PACKAGE_DIR org.iopsuite.testehr.TestEhrServer PORT [--no-validation]
 *        [--package NAME.tgz]...
 */
public final class TestEhrServer {
    private static final List<Class<? extends Resource>> TYPES = List.of(Patient.class, CarePlan.class, Goal.class,
            ServiceRequest.class, Encounter.class, Observation.class, EpisodeOfCare.class, Provenance.class,
            Consent.class, Condition.class);
    /** Server-assigned ids: one sequence for all types, whether created by POST or inside a transaction. */
    private static final AtomicLong NEXT_ID = new AtomicLong(1);

    public static void main(String[] args) throws Exception {
        long started = System.nanoTime();
        int port = Integer.parseInt(args[0]);
        boolean validate = !List.of(args).contains("--no-validation");
        List<String> packages = new ArrayList<>();
        for (int i = 1; i < args.length - 1; i++) {
            if (args[i].equals("--package")) {
                packages.add(args[i + 1]);
            }
        }
        FhirContext ctx = FhirContext.forR4Cached();
        ctx.setParserErrorHandler(new StrictErrorHandler()); // unknown elements and bad values are refused
        Map<String, Store<?>> stores = new LinkedHashMap<>();
        for (Class<? extends Resource> type : TYPES) {
            stores.put(ctx.getResourceType(type), new Store<>(ctx, type));
        }
        RestfulServer fhir = new RestfulServer(ctx);
        fhir.setDefaultResponseEncoding(EncodingEnum.JSON);
        fhir.registerProviders(new ArrayList<Object>(stores.values()));
        fhir.registerProvider(new TransactionProvider(ctx, stores));
        if (validate) {
            fhir.registerInterceptor(requestValidation(ctx, packages));
        }
        Server jetty = new Server(new InetSocketAddress("127.0.0.1", port));
        ServletContextHandler context = new ServletContextHandler();
        context.addServlet(new ServletHolder(fhir), "/fhir/*");
        jetty.setHandler(context);
        jetty.start();
        System.out.printf("TestEhrServer ready on http://127.0.0.1:%d/fhir in %d ms (validation %s)%n", port,
                (System.nanoTime() - started) / 1_000_000, validate ? "on" : "off");
        jetty.join();
    }

    /** Refuses requests whose resources have ERROR issues; warmed up so that the first request is not slow. */
    private static RequestValidatingInterceptor requestValidation(FhirContext ctx, List<String> packages)
            throws java.io.IOException {
        ValidationSupportChain support = new ValidationSupportChain(ProfileValidator.packages(ctx, packages),
                new DefaultProfileValidationSupport(ctx),
                new CommonCodeSystemsTerminologyService(ctx), new InMemoryTerminologyServerValidationSupport(ctx),
                new SnapshotGeneratingValidationSupport(ctx));
        FhirInstanceValidator module = new FhirInstanceValidator(support);
        FhirValidator warmUp = ctx.newValidator().registerValidatorModule(module);
        Bundle sample = new Bundle().setType(BundleType.TRANSACTION);
        sample.addEntry().setFullUrl("urn:uuid:8e5b1b9e-2d1c-4c2e-9a55-000000000001")
                .setResource(new CarePlan().setStatus(CarePlan.CarePlanStatus.ACTIVE)
                        .setIntent(CarePlan.CarePlanIntent.PLAN).setSubject(new Reference("Patient?identifier=a|b")))
                .getRequest().setMethod(Bundle.HTTPVerb.PUT).setUrl("CarePlan?identifier=a|b");
        warmUp.validateWithResult(sample);
        RequestValidatingInterceptor interceptor = new RequestValidatingInterceptor() {
            @Override // warnings do not refuse a request: they go to the log
            protected void postProcessResult(RequestDetails request, ValidationResult result) {
                result.getMessages().stream().filter(m -> m.getSeverity().ordinal() >= ResultSeverityEnum.WARNING.ordinal())
                        .forEach(m -> System.out.printf("validation %s %s %s: %s%n", m.getSeverity(),
                                request.getRequestPath(), m.getLocationString(), m.getMessage()));
            }
        };
        interceptor.addValidatorModule(module);
        interceptor.setFailOnSeverity(ResultSeverityEnum.ERROR);
        return interceptor;
    }

    /** HAPI's in-memory provider plus search by identifier and the shared id sequence. */
    public static final class Store<T extends IBaseResource> extends HashMapResourceProvider<T> {
        private final boolean hasIdentifier;

        Store(FhirContext ctx, Class<T> type) {
            super(ctx, type);
            hasIdentifier = ctx.getResourceDefinition(type).getChildByName("identifier") != null;
        }

        @Override // keeps HAPI's @Create binding (reflection dispatches here)
        public synchronized MethodOutcome create(T resource, RequestDetails request) {
            resource.setId(Long.toString(NEXT_ID.getAndIncrement()));
            return update(resource, null, request);
        }

        @Override // keeps HAPI's @Update binding; a real server stamps lastUpdated
        public synchronized MethodOutcome update(T resource, String conditional, RequestDetails request) {
            resource.getMeta().setLastUpdated(new Date());
            return super.update(resource, conditional, request);
        }

        @Search
        public synchronized List<IBaseResource> searchByIdentifier(
                @RequiredParam(name = "identifier") TokenParam identifier) {
            return new ArrayList<>(matching(identifier.getSystem(), identifier.getValue()));
        }

        /** Current resources with an identifier matching a token (system null: any system). */
        synchronized List<T> matching(String system, String value) {
            List<T> found = new ArrayList<>();
            for (T resource : getAllResources()) {
                List<Identifier> identifiers = hasIdentifier
                        ? getFhirContext().newTerser().getValues(resource, "identifier", Identifier.class) : List.of();
                if (identifiers.stream().anyMatch(i -> (system == null || system.equals(i.hasSystem() ? i.getSystem() : ""))
                        && (value == null || value.isEmpty() || value.equals(i.getValue())))) {
                    found.add(resource);
                }
            }
            return found;
        }

        synchronized boolean exists(String id) {
            return getAllResources().stream().anyMatch(r -> r.getIdElement().getIdPart().equals(id));
        }

        MethodOutcome put(IBaseResource resource, RequestDetails request) {
            return update(getResourceType().cast(resource), null, request);
        }
    }

    /**
     * A minimal system-level transaction, all or nothing: every entry's target is resolved first (conditional
     * PUT on Type?identifier=..., POST with ifNoneExist), then urn:uuid: and conditional references are replaced
     * by the real ids, and only then anything is written. Errors are those a HAPI JPA server gives.
     */
    public static final class TransactionProvider {
        private final FhirContext ctx;
        private final Map<String, Store<?>> stores;

        TransactionProvider(FhirContext ctx, Map<String, Store<?>> stores) {
            this.ctx = ctx;
            this.stores = stores;
        }

        private record Write(Store<?> store, Resource resource, String id, boolean skip) {
            String typeId() {
                return resource.fhirType() + "/" + id;
            }
        }

        @Transaction
        public Bundle transaction(@TransactionParam Bundle bundle, RequestDetails request) {
            synchronized (stores) {
                if (bundle.getType() != BundleType.TRANSACTION) {
                    throw new InvalidRequestException("Bundle.type must be transaction, not " + bundle.getType());
                }
                Map<String, String> placeholders = new HashMap<>(); // fullUrl -> Type/id
                Set<String> targets = new HashSet<>();
                List<Write> writes = new ArrayList<>();
                for (BundleEntryComponent entry : bundle.getEntry()) {
                    Write write = plan(entry);
                    if (!write.skip() && !targets.add(write.typeId())) {
                        throw new InvalidRequestException("Transaction has more than one entry for " + write.typeId());
                    }
                    if (entry.hasFullUrl()) {
                        placeholders.put(entry.getFullUrl(), write.typeId());
                    }
                    writes.add(write);
                }
                for (Write write : writes) {
                    if (!write.skip()) {
                        resolveReferences(write.resource(), placeholders, targets);
                    }
                }
                Bundle response = new Bundle().setType(BundleType.TRANSACTIONRESPONSE);
                for (Write write : writes) {
                    Bundle.BundleEntryResponseComponent outcome = response.addEntry().getResponse();
                    if (write.skip()) {
                        outcome.setStatus("200 OK").setLocation(write.typeId());
                        continue;
                    }
                    write.resource().setId(write.typeId());
                    MethodOutcome stored = write.store().put(write.resource(), request);
                    outcome.setStatus(Boolean.TRUE.equals(stored.getCreated()) ? "201 Created" : "200 OK")
                            .setLocation(stored.getId().toUnqualified().getValue())
                            .setEtag("W/\"" + stored.getId().getVersionIdPart() + "\"")
                            .setLastModified(write.resource().getMeta().getLastUpdated());
                }
                return response;
            }
        }

        private Write plan(BundleEntryComponent entry) {
            Resource resource = entry.getResource();
            Bundle.HTTPVerb method = entry.getRequest().getMethod();
            String url = entry.getRequest().getUrl();
            if (resource == null || method == null || url == null) {
                throw new InvalidRequestException("Each entry needs a resource and a request with method and url");
            }
            String type = resource.fhirType();
            Store<?> store = store(type);
            switch (method) {
                case PUT -> {
                    if (!url.contains("?")) {
                        String id = url.substring(url.indexOf('/') + 1);
                        if (!url.equals(type + "/" + id) || id.isEmpty() || id.contains("/")) {
                            throw new InvalidRequestException("PUT url must be " + type + "/[id] or a match URL: " + url);
                        }
                        return new Write(store, resource, id, false);
                    }
                    List<String> ids = match(url, type);
                    return new Write(store, resource, ids.isEmpty() ? newId() : ids.get(0), false);
                }
                case POST -> {
                    String ifNoneExist = entry.getRequest().getIfNoneExist();
                    if (ifNoneExist == null || ifNoneExist.isBlank()) {
                        return new Write(store, resource, newId(), false);
                    }
                    List<String> ids = match(ifNoneExist.contains("?") ? ifNoneExist : type + "?" + ifNoneExist, type);
                    return ids.isEmpty() ? new Write(store, resource, newId(), false)
                            : new Write(store, resource, ids.get(0), true);
                }
                default -> throw new InvalidRequestException(
                        "This test server supports only PUT and POST transaction entries, not " + method);
            }
        }

        private void resolveReferences(Resource resource, Map<String, String> placeholders, Set<String> targets) {
            for (Reference reference : ctx.newTerser().getAllPopulatedChildElementsOfType(resource, Reference.class)) {
                String target = reference.getReference();
                if (target == null || target.startsWith("#") || UrlUtil.isAbsolute(target)) {
                    continue; // contained, identifier-only or absolute: nothing to resolve
                }
                if (placeholders.containsKey(target)) {
                    reference.setReference(placeholders.get(target));
                } else if (target.startsWith("urn:")) {
                    throw new InvalidRequestException("Unable to satisfy placeholder ID " + target
                            + " found in resource of type " + resource.fhirType());
                } else if (target.contains("?")) {
                    String type = target.substring(0, target.indexOf('?'));
                    reference.setReference(type + "/" + match(target, null).get(0));
                } else {
                    String[] parts = target.split("/");
                    if (stores.containsKey(parts[0]) && parts.length >= 2 && !targets.contains(parts[0] + "/" + parts[1])
                            && !stores.get(parts[0]).exists(parts[1])) {
                        throw new InvalidRequestException("Resource " + target + " not found, specified in "
                                + resource.fhirType());
                    }
                }
            }
        }

        /** Ids of the resources a match URL Type?identifier=system|value finds; a reference must find exactly one. */
        private List<String> match(String url, String expectedType) {
            String type = url.substring(0, url.indexOf('?'));
            if (expectedType != null && !type.equals(expectedType)) {
                throw new InvalidRequestException("Match URL " + url + " is not for a " + expectedType);
            }
            Map<String, String[]> params = UrlUtil.parseQueryString(url.substring(url.indexOf('?') + 1));
            String[] tokens = params.get("identifier");
            if (params.size() != 1 || tokens == null || tokens.length != 1) {
                throw new InvalidRequestException("This test server matches only on one identifier parameter: " + url);
            }
            int bar = tokens[0].indexOf('|');
            String system = bar < 0 ? null : tokens[0].substring(0, bar);
            List<String> ids = store(type).matching(system, tokens[0].substring(bar + 1)).stream()
                    .map(r -> r.getIdElement().getIdPart()).toList();
            if (ids.size() > 1) {
                throw new PreconditionFailedException("Invalid match URL \"" + url + "\" - Multiple resources match this search");
            }
            if (ids.isEmpty() && expectedType == null) {
                throw new ResourceNotFoundException("Invalid match URL \"" + url + "\" - No resources match this search");
            }
            return ids;
        }

        private Store<?> store(String type) {
            Store<?> store = stores.get(type);
            if (store == null) {
                throw new InvalidRequestException("This test server does not store " + type + " resources");
            }
            return store;
        }

        private static String newId() {
            return Long.toString(NEXT_ID.getAndIncrement());
        }
    }
}
