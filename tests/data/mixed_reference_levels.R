# Reference numbers for tests/test_mixed.py: a factor coded against a reference level that is
# not its first sorted one (R's relevel), as the fit stage codes adherence_group against
# fit.reference_levels. lmerTest (Satterthwaite df), nloptwrap with the tightened tolerances of
# mixed_lmertest_references.R. Data: mixed_orthodont.csv (written by mixed_lme4_references.R).
# Run from this folder:  Rscript mixed_reference_levels.R
suppressPackageStartupMessages(library(lmerTest))
options(digits = 17)
orthodont <- read.csv("mixed_orthodont.csv", stringsAsFactors = FALSE)
orthodont$Sex <- relevel(factor(orthodont$Sex), ref = "Male")
tight <- lmerControl(
  optimizer = "nloptwrap",
  optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 1e-12, ftol_rel = 1e-14,
                 maxeval = 1e5)
)
fit <- lmerTest::lmer(distance ~ age * Sex + (age | Subject), orthodont, REML = TRUE,
                      control = tight)
fixed <- summary(fit)$coefficients
write.csv(
  data.frame(term = rownames(fixed), estimate = fixed[, "Estimate"],
             std_error = fixed[, "Std. Error"], df = fixed[, "df"], p_value = fixed[, "Pr(>|t|)"]),
  "mixed_reference_levels.csv", row.names = FALSE
)
