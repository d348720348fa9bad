package org.iopsuite.testehr;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.ValidationResult;
import java.io.IOException;
import java.io.Reader;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.NpmPackageValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.Bundle.BundleEntryComponent;
import org.hl7.fhir.r4.model.OperationOutcome;

/**
 * Validates resources against the profiles they claim (meta.profile), with HAPI's instance validator, offline:
 * FHIR R4 core from hapi-fhir-validation-resources-r4, and the FHIR packages (.tgz) named on the command line,
 * loaded from the classpath (put their folder on it). One JVM run validates a whole batch.
 * Input: a collection Bundle; output: a collection Bundle of one OperationOutcome per input entry, in order.
 * An unknown claimed profile is an error; a code system not available offline is a warning.
 * Usage: java -cp test-ehr.jar:PACKAGE_DIR org.iopsuite.testehr.ProfileValidator IN.json OUT.json PACKAGE.tgz...
 */
public final class ProfileValidator {
    public static void main(String[] args) throws IOException {
        long started = System.nanoTime();
        FhirContext ctx = FhirContext.forR4Cached();
        List<String> packages = List.of(args).subList(2, args.length);
        FhirValidator validator = ctx.newValidator().registerValidatorModule(module(ctx, packages));
        Bundle input;
        try (Reader in = Files.newBufferedReader(Path.of(args[0]), StandardCharsets.UTF_8)) {
            input = ctx.newJsonParser().parseResource(Bundle.class, in);
        }
        long loaded = System.nanoTime();
        Bundle output = new Bundle().setType(Bundle.BundleType.COLLECTION);
        int errors = 0;
        int warnings = 0;
        for (BundleEntryComponent entry : input.getEntry()) {
            ValidationResult result = validator.validateWithResult(entry.getResource());
            errors += count(result, ResultSeverityEnum.ERROR) + count(result, ResultSeverityEnum.FATAL);
            warnings += count(result, ResultSeverityEnum.WARNING);
            output.addEntry().setResource((OperationOutcome) result.toOperationOutcome());
        }
        try (Writer out = Files.newBufferedWriter(Path.of(args[1]), StandardCharsets.UTF_8)) {
            ctx.newJsonParser().encodeResourceToWriter(output, out);
        }
        System.out.printf("validated %d resources: %d errors, %d warnings (set-up %d ms, validation %d ms)%n",
                input.getEntry().size(), errors, warnings, (loaded - started) / 1_000_000,
                (System.nanoTime() - loaded) / 1_000_000);
    }

    /** The definitions of the FHIR packages (.tgz files on the classpath) named. */
    static NpmPackageValidationSupport packages(FhirContext ctx, List<String> names) throws IOException {
        NpmPackageValidationSupport npm = new NpmPackageValidationSupport(ctx);
        for (String name : names) {
            npm.loadPackageFromClasspath("classpath:" + name);
        }
        return npm;
    }

    private static FhirInstanceValidator module(FhirContext ctx, List<String> packages) throws IOException {
        NpmPackageValidationSupport npm = packages(ctx, packages);
        // LOINC, SNOMED CT and CPT are not available offline: a code from them is a warning, never an error
        ValidationSupportChain chain = new ValidationSupportChain(npm, new DefaultProfileValidationSupport(ctx),
                new CommonCodeSystemsTerminologyService(ctx), new InMemoryTerminologyServerValidationSupport(ctx),
                new SnapshotGeneratingValidationSupport(ctx), new UnknownCodeSystemWarningValidationSupport(ctx));
        FhirInstanceValidator module = new FhirInstanceValidator(chain);
        module.setErrorForUnknownProfiles(true); // a claim the packages cannot back is a failure, not a note
        return module;
    }

    private static int count(ValidationResult result, ResultSeverityEnum severity) {
        return (int) result.getMessages().stream().filter(m -> m.getSeverity() == severity).count();
    }
}
