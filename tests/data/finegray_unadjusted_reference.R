# Reference fits for tests/test_fit.py (unadjusted Fine-Gray, one covariate at a time):
# cmprsk::crr (cmprsk 2.2-11) on 300 people of the simulated default study (seed 20261125),
# withdrawal competing with recovery, factors coded against fit.reference_levels (mild,
# recent, no underlying condition); crr drops the rows missing the covariate (3 without
# mean_sitting_hours). gtol tightened from crr's 1e-6, whose Newton steps stop about 1e-6
# (relative) short of the optimum the toolkit reports.
# Run from tests/data:  Rscript finegray_unadjusted_reference.R
library(cmprsk)
options(digits = 17)
cohort <- read.csv("finegray_unadjusted_cohort.csv", stringsAsFactors = FALSE)
cohort$severity <- relevel(factor(cohort$severity), ref = "mild")
cohort$chronic <- relevel(factor(cohort$chronic), ref = "False")
cohort$underlying_condition <- relevel(factor(cohort$underlying_condition), ref = "none")
rows <- list()
for (covariate in c("overall_adherence", "mean_sitting_hours", "severity", "chronic",
                    "underlying_condition")) {
  used <- cohort[!is.na(cohort[[covariate]]), ]
  design <- model.matrix(as.formula(paste("~", covariate)), data = used)[, -1, drop = FALSE]
  fit <- crr(used$time_to_recovery_days, used$event_type, cov1 = design,
             failcode = "recovered", cencode = "censored", gtol = 1e-9)
  rows[[covariate]] <- data.frame(
    covariate = covariate, term = colnames(design), estimate = fit$coef,
    std_error = sqrt(diag(fit$var)), n = fit$n, converged = fit$converged
  )
}
write.csv(do.call(rbind, rows), "finegray_unadjusted_crr.csv", row.names = FALSE)
