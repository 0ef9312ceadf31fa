# Reference fits for tests/test_survival_competing.py (Fine-Gray): cmprsk::crr (cmprsk 2.2-11)
# and, for the point estimates, survival::finegray + weighted coxph (survival 3.5-3).
# Run from tests/data:  Rscript finegray_reference.R
# Data: mgus2 pcm vs death, etime/event as in the survival "compete" vignette; mspike has
# 11 missing values, which crr and coxph drop.
library(survival)
library(cmprsk)
options(digits = 17)
etime <- with(mgus2, ifelse(pstat == 0, futime, ptime))
event <- with(mgus2, ifelse(pstat == 0, 2 * death, 1))
event <- factor(event, 0:2, labels = c("censored", "pcm", "death"))
mgus2_competing <- data.frame(
  id = mgus2$id, age = mgus2$age, sex = as.character(mgus2$sex), mspike = mgus2$mspike,
  etime = etime, event = as.character(event)
)
write.csv(mgus2_competing, "finegray_mgus2.csv", row.names = FALSE, na = "")

rows <- list()
for (cause in c("pcm", "death")) {
  covariates <- model.matrix(~ age + sex + mspike, data = mgus2_competing)[, -1]
  kept <- as.integer(rownames(covariates))
  fit <- crr(mgus2_competing$etime[kept], mgus2_competing$event[kept], cov1 = covariates,
             failcode = cause, cencode = "censored")
  rows[[paste("crr", cause)]] <- data.frame(
    method = "crr", event = cause, term = names(fit$coef), estimate = fit$coef,
    std_error = sqrt(diag(fit$var)), converged = fit$converged
  )
  data_fg <- mgus2_competing
  data_fg$event <- factor(data_fg$event, c("censored", "pcm", "death"))
  weighted <- finegray(Surv(etime, event) ~ ., data = data_fg, etype = cause)
  cox <- coxph(Surv(fgstart, fgstop, fgstatus) ~ age + sex + mspike, weights = fgwt,
               data = weighted)
  rows[[paste("finegray", cause)]] <- data.frame(
    method = "finegray_coxph", event = cause, term = names(coef(cox)), estimate = coef(cox),
    std_error = sqrt(diag(vcov(cox))), converged = TRUE
  )
}
# Two covariates only (no missing values), for a second check of the variance.
for (cause in c("pcm", "death")) {
  covariates <- model.matrix(~ age + sex, data = mgus2_competing)[, -1]
  fit <- crr(mgus2_competing$etime, mgus2_competing$event, cov1 = covariates,
             failcode = cause, cencode = "censored")
  rows[[paste("crr2", cause)]] <- data.frame(
    method = "crr_age_sex", event = cause, term = names(fit$coef), estimate = fit$coef,
    std_error = sqrt(diag(fit$var)), converged = fit$converged
  )
}
write.csv(do.call(rbind, rows), "finegray_coefficients.csv", row.names = FALSE)
