# Reference numbers for tests/test_mixed.py, from lme4 1.1-31.
# Every fit uses nloptwrap with tightened tolerances (`tight` below): with the defaults lme4
# stops ~2e-3 (relative) short of the REML optimum on Orthodont's random-slope variance (its
# logLik is 2.8e-6 lower than the optimum, which bobyqa and Nelder_Mead also reach), and that
# would make a 1e-3 parity test compare against optimizer noise, not against the model.
# Run from this folder:  Rscript mixed_lme4_references.R > mixed_lme4_references.Rout 2>&1
# Writes the datasets (mixed_<dataset>.csv) and the references (mixed_lme4_references.csv,
# mixed_lme4_ranef.csv), and prints every fit with digits = 15.
suppressPackageStartupMessages({
  library(lme4)
  library(nlme)  # only for the Orthodont data set
})

write_dataset <- function(frame, name) {
  write.csv(frame, sprintf("mixed_%s.csv", name), row.names = FALSE)
}

sleepstudy_data <- lme4::sleepstudy
sleepstudy_data$Subject <- as.character(sleepstudy_data$Subject)
write_dataset(sleepstudy_data, "sleepstudy")

# Orthodont's Sex factor is ordered Male, Female in nlme; relevel to sorted order so the
# reference level (Female) matches the toolkit's "first sorted level" treatment coding.
orthodont_data <- data.frame(
  distance = nlme::Orthodont$distance,
  age = nlme::Orthodont$age,
  Subject = as.character(nlme::Orthodont$Subject),
  Sex = factor(as.character(nlme::Orthodont$Sex))
)
write_dataset(orthodont_data, "orthodont")

dyestuff_data <- lme4::Dyestuff
dyestuff_data$Batch <- as.character(dyestuff_data$Batch)
write_dataset(dyestuff_data, "dyestuff")

# Dyestuff2: the between-batch variance is estimated as exactly 0 (a singular fit).
dyestuff2_data <- lme4::Dyestuff2
dyestuff2_data$Batch <- as.character(dyestuff2_data$Batch)
write_dataset(dyestuff2_data, "dyestuff2")

# sleepstudy with dropout: subject i (in sorted order) is followed up to day 1 + (i %% 9) and
# Reaction is missing afterwards. The unbalanced design is where statsmodels' Hessian-based
# bse_fe departs from lme4's (X' V^-1 X)^-1; lmer drops the missing rows (na.omit).
sleepstudy_dropout_data <- sleepstudy_data
subject_index <- as.integer(factor(sleepstudy_dropout_data$Subject))
after_dropout <- sleepstudy_dropout_data$Days > 1 + (subject_index %% 9)
sleepstudy_dropout_data$Reaction[after_dropout] <- NA
write_dataset(sleepstudy_dropout_data, "sleepstudy_dropout")

tight <- lmerControl(
  optimizer = "nloptwrap",
  optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 1e-12, ftol_rel = 1e-14,
                 maxeval = 1e5)
)
lmer_tight <- function(formula, data, REML) lmer(formula, data, REML = REML, control = tight)

fits <- list(
  sleepstudy_slopes_reml = lmer_tight(Reaction ~ Days + (Days | Subject), sleepstudy_data, TRUE),
  sleepstudy_slopes_ml = lmer_tight(Reaction ~ Days + (Days | Subject), sleepstudy_data, FALSE),
  sleepstudy_intercept_reml = lmer_tight(Reaction ~ Days + (1 | Subject), sleepstudy_data, TRUE),
  sleepstudy_dropout_slopes_reml = lmer_tight(
    Reaction ~ Days + (Days | Subject), sleepstudy_dropout_data, TRUE
  ),
  orthodont_slopes_reml = lmer_tight(distance ~ age * Sex + (age | Subject), orthodont_data, TRUE),
  dyestuff_intercept_reml = lmer_tight(Yield ~ 1 + (1 | Batch), dyestuff_data, TRUE),
  dyestuff2_intercept_reml = lmer_tight(Yield ~ 1 + (1 | Batch), dyestuff2_data, TRUE)
)

full <- function(x) sprintf("%.17g", x)
rows <- list()
ranef_rows <- list()
for (model in names(fits)) {
  fit <- fits[[model]]
  cat("\n=====", model, "=====\n")
  print(summary(fit), digits = 15)
  print(fixef(fit), digits = 15)
  print(sqrt(diag(vcov(fit))), digits = 15)
  print(as.data.frame(VarCorr(fit)), digits = 15)
  print(logLik(fit), digits = 15)
  print(AIC(fit), digits = 15)
  print(isSingular(fit))

  fixed <- fixef(fit)
  std_error <- sqrt(diag(as.matrix(vcov(fit))))
  rows[[length(rows) + 1]] <- data.frame(
    model = model, quantity = "estimate", term1 = names(fixed), term2 = "", value = full(fixed)
  )
  rows[[length(rows) + 1]] <- data.frame(
    model = model, quantity = "std_error", term1 = names(std_error), term2 = "",
    value = full(std_error)
  )
  varcorr <- as.data.frame(VarCorr(fit))
  varcorr$var1[is.na(varcorr$var1)] <- ""
  varcorr$var2[is.na(varcorr$var2)] <- ""
  rows[[length(rows) + 1]] <- data.frame(
    model = model, quantity = paste0("varcorr_variance:", varcorr$grp), term1 = varcorr$var1,
    term2 = varcorr$var2, value = full(varcorr$vcov)
  )
  rows[[length(rows) + 1]] <- data.frame(
    model = model, quantity = paste0("varcorr_sd_cor:", varcorr$grp), term1 = varcorr$var1,
    term2 = varcorr$var2, value = full(varcorr$sdcor)
  )
  rows[[length(rows) + 1]] <- data.frame(
    model = model, quantity = c("log_likelihood", "aic", "singular"), term1 = "", term2 = "",
    value = c(full(as.numeric(logLik(fit))), full(AIC(fit)), full(as.numeric(isSingular(fit))))
  )
  blups <- ranef(fit)[[1]]
  for (term in colnames(blups)) {
    ranef_rows[[length(ranef_rows) + 1]] <- data.frame(
      model = model, group = rownames(blups), term = term, value = full(blups[[term]])
    )
  }
}
write.csv(do.call(rbind, rows), "mixed_lme4_references.csv", row.names = FALSE)
write.csv(do.call(rbind, ranef_rows), "mixed_lme4_ranef.csv", row.names = FALSE)
