# Reference numbers for tests/test_mixed.py on data sets the engine was not developed on, from
# lme4 and lmerTest (Satterthwaite df and p-values of summary(fit)).
# Every fit uses nloptwrap with tightened tolerances (`tight`), as in mixed_lme4_references.R.
# Run from this folder:  Rscript mixed_lmertest_references.R > mixed_lmertest_references.Rout 2>&1
# Writes the data sets (mixed_<dataset>.csv) and the references (mixed_lmertest_references.csv,
# mixed_lmertest_ranef.csv), and prints every fit with digits = 15.
# Factors are written as character and re-made with factor(), so their reference level is the
# first sorted level, as the toolkit's treatment coding.
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(nlme)
})
cat(R.version.string, "lme4", format(packageVersion("lme4")), "lmerTest",
    format(packageVersion("lmerTest")), "\n")

write_dataset <- function(frame, name) {
  write.csv(frame, sprintf("mixed_%s.csv", name), row.names = FALSE)
}

bodyweight_data <- data.frame(
  weight = nlme::BodyWeight$weight, Time = nlme::BodyWeight$Time,
  Rat = as.character(nlme::BodyWeight$Rat), Diet = as.character(nlme::BodyWeight$Diet)
)
write_dataset(bodyweight_data, "bodyweight")

mathachieve_data <- data.frame(
  MathAch = nlme::MathAchieve$MathAch, SES = nlme::MathAchieve$SES,
  Minority = as.character(nlme::MathAchieve$Minority), Sex = as.character(nlme::MathAchieve$Sex),
  School = as.character(nlme::MathAchieve$School)
)
write_dataset(mathachieve_data, "mathachieve")

oats_data <- data.frame(
  yield = nlme::Oats$yield, nitro = nlme::Oats$nitro,
  Variety = as.character(nlme::Oats$Variety), Block = as.character(nlme::Oats$Block)
)
write_dataset(oats_data, "oats")

orange_data <- data.frame(
  circumference = datasets::Orange$circumference, age = datasets::Orange$age,
  Tree = as.character(datasets::Orange$Tree)
)
write_dataset(orange_data, "orange")

# Three correlated random effects per boy (intercept, age, age^2): the general-q path.
oxboys_data <- data.frame(
  height = nlme::Oxboys$height, age = nlme::Oxboys$age, age2 = nlme::Oxboys$age^2,
  Subject = as.character(nlme::Oxboys$Subject)
)
write_dataset(oxboys_data, "oxboys")

chickweight_data <- data.frame(
  weight = datasets::ChickWeight$weight, Time = datasets::ChickWeight$Time,
  Chick = as.character(datasets::ChickWeight$Chick), Diet = as.character(datasets::ChickWeight$Diet)
)
write_dataset(chickweight_data, "chickweight")

as_factors <- function(frame, columns) {
  for (column in columns) frame[[column]] <- factor(frame[[column]])
  frame
}
bodyweight_data <- as_factors(bodyweight_data, "Diet")
mathachieve_data <- as_factors(mathachieve_data, c("Minority", "Sex"))
oats_data <- as_factors(oats_data, "Variety")
chickweight_data <- as_factors(chickweight_data, "Diet")

tight <- lmerControl(
  optimizer = "nloptwrap",
  optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 1e-12, ftol_rel = 1e-14,
                 maxeval = 1e5)
)
lmer_tight <- function(formula, data, REML) lmerTest::lmer(formula, data, REML = REML, control = tight)

fits <- list(
  bodyweight_slopes_reml = lmer_tight(weight ~ Time * Diet + (Time | Rat), bodyweight_data, TRUE),
  bodyweight_slopes_ml = lmer_tight(weight ~ Time * Diet + (Time | Rat), bodyweight_data, FALSE),
  mathachieve_slopes_reml = lmer_tight(
    MathAch ~ SES + Minority + Sex + (SES | School), mathachieve_data, TRUE
  ),
  mathachieve_slopes_ml = lmer_tight(
    MathAch ~ SES + Minority + Sex + (SES | School), mathachieve_data, FALSE
  ),
  mathachieve_intercept_ml = lmer_tight(MathAch ~ SES + Minority + (1 | School), mathachieve_data, FALSE),
  oats_intercept_reml = lmer_tight(yield ~ nitro + Variety + (1 | Block), oats_data, TRUE),
  oats_intercept_ml = lmer_tight(yield ~ nitro + Variety + (1 | Block), oats_data, FALSE),
  orange_intercept_reml = lmer_tight(circumference ~ age + (1 | Tree), orange_data, TRUE),
  orange_intercept_ml = lmer_tight(circumference ~ age + (1 | Tree), orange_data, FALSE),
  oxboys_quadratic_reml = lmer_tight(height ~ age + age2 + (age + age2 | Subject), oxboys_data, TRUE),
  chickweight_slopes_reml = lmer_tight(weight ~ Time * Diet + (Time | Chick), chickweight_data, TRUE),
  chickweight_slopes_ml = lmer_tight(weight ~ Time * Diet + (Time | Chick), chickweight_data, FALSE)
)

full <- function(x) sprintf("%.17g", x)
rows <- list()
ranef_rows <- list()
for (model in names(fits)) {
  fit <- fits[[model]]
  cat("\n=====", model, "=====\n")
  print(summary(fit), digits = 15)
  print(as.data.frame(VarCorr(fit)), digits = 15)
  print(logLik(fit), digits = 15)
  print(getME(fit, "theta"), digits = 15)
  print(isSingular(fit))

  coefficients <- summary(fit)$coefficients  # lmerTest: Satterthwaite df and Pr(>|t|)
  terms <- rownames(coefficients)
  add <- function(quantity, term1, term2, value) {
    rows[[length(rows) + 1]] <<- data.frame(
      model = model, quantity = quantity, term1 = term1, term2 = term2, value = full(value)
    )
  }
  add("estimate", terms, "", coefficients[, "Estimate"])
  add("std_error", terms, "", coefficients[, "Std. Error"])
  add("df", terms, "", coefficients[, "df"])
  add("t_value", terms, "", coefficients[, "t value"])
  add("p_value", terms, "", coefficients[, "Pr(>|t|)"])
  varcorr <- as.data.frame(VarCorr(fit))
  varcorr$var1[is.na(varcorr$var1)] <- ""
  varcorr$var2[is.na(varcorr$var2)] <- ""
  add(paste0("varcorr_variance:", varcorr$grp), varcorr$var1, varcorr$var2, varcorr$vcov)
  add(paste0("varcorr_sd_cor:", varcorr$grp), varcorr$var1, varcorr$var2, varcorr$sdcor)
  add(c("log_likelihood", "aic", "singular"), "", "",
      c(as.numeric(logLik(fit)), AIC(fit), as.numeric(isSingular(fit))))
  blups <- ranef(fit)[[1]]
  for (term in colnames(blups)) {
    ranef_rows[[length(ranef_rows) + 1]] <- data.frame(
      model = model, group = rownames(blups), term = term, value = full(blups[[term]])
    )
  }
}
write.csv(do.call(rbind, rows), "mixed_lmertest_references.csv", row.names = FALSE)
write.csv(do.call(rbind, ranef_rows), "mixed_lmertest_ranef.csv", row.names = FALSE)
