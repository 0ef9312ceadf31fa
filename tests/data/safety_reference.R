# Reference numbers for tests/test_survival_safety.py (the model-safety rule, docs/model-safety.md).
# Run from tests/data:  Rscript safety_reference.R   (R 4.2, survival 3.5-3, cmprsk 2.2-11)
# Datasets (none of them used elsewhere in tests/data): survival::colon, rotterdam, pbc, cgd, mgus.
# Writes safety_*.csv (data) and safety_reference_*.csv (R's results).
library(survival)
library(cmprsk)
out <- function(frame, name) write.csv(frame, name, row.names = FALSE)
options(digits = 17)

# colon (death records): a treatment level "none_died" given to censored patients with >= 10
# nodes, so no one in it has the event; coxph warns its coefficient may be infinite.
colon_death <- subset(colon, etype == 2 & !is.na(nodes))
colon_data <- data.frame(time = colon_death$time, status = colon_death$status,
                         age = colon_death$age, nodes = colon_death$nodes,
                         group = as.character(colon_death$rx), stringsAsFactors = FALSE)
colon_data$group[colon_data$status == 0 & colon_data$nodes >= 10] <- "none_died"
out(colon_data, "safety_colon.csv")

rotterdam_data <- data.frame(dtime = rotterdam$dtime, death = rotterdam$death,
                             age = rotterdam$age, nodes = rotterdam$nodes, meno = rotterdam$meno,
                             grade = rotterdam$grade)
out(rotterdam_data, "safety_rotterdam.csv")

pbc_data <- with(subset(pbc, !is.na(trt)), data.frame(
  time = time, status = status, dead = as.integer(status == 2), age = age, edema = edema,
  log_bili = log(bili), albumin = albumin, sex = as.character(sex)))
out(pbc_data, "safety_pbc.csv")

cgd_data <- data.frame(id = cgd$id, tstart = cgd$tstart, tstop = cgd$tstop, status = cgd$status,
                       treat = as.character(cgd$treat), age = cgd$age,
                       inherit = as.character(cgd$inherit))
out(cgd_data, "safety_cgd.csv")

# mgus (not mgus2): progression to a plasma-cell malignancy (1) competing with death (2),
# coded as R codes competing risks: 0 = censored.
mgus_data <- with(mgus, data.frame(
  etime = ifelse(is.na(pctime), futime, pctime),
  status = ifelse(is.na(pctime), 2 * death, 1),
  age = age, male = as.integer(sex == "male"), mspike = mspike))
out(mgus_data, "safety_mgus.csv")

toolkit <- function(term) {
  term <- sub("^severity(.*)$", "severity[\\1]", term)
  term <- sub("^underlying_condition(.*)$", "underlying_condition[\\1]", term)
  term <- sub("^group(.*)$", "group[\\1]", term)
  term <- sub("^treat(.*)$", "treat[\\1]", term)
  term <- sub("^inherit(.*)$", "inherit[\\1]", term)
  sub("^sex(.*)$", "sex[\\1]", term)
}
sorted_factor <- function(x) factor(x, levels = sort(unique(x), method = "radix"))
colon_data$group <- sorted_factor(colon_data$group)
cgd_data$treat <- sorted_factor(cgd_data$treat)
cgd_data$inherit <- sorted_factor(cgd_data$inherit)
pbc_data$sex <- sorted_factor(pbc_data$sex)
rotterdam_data$age_months <- 12 * rotterdam_data$age

models <- list(
  colon_no_events = coxph(Surv(time, status) ~ age + nodes + group, colon_data),
  rotterdam_aliased = coxph(Surv(dtime, death) ~ age + age_months + nodes, rotterdam_data),
  rotterdam_strata_aliased = coxph(Surv(dtime, death) ~ age + meno + nodes + strata(meno),
                                   rotterdam_data),
  pbc = coxph(Surv(time, dead) ~ age + edema + log_bili + albumin + sex, pbc_data),
  cgd = coxph(Surv(tstart, tstop, status) ~ treat + age + inherit, cgd_data)
)
# A 14-person site of the simulated study (safety_small_site.csv, written by the toolkit's
# simulator, not by this script): coxph flags "none" and "other" (variables 7, 8) as possibly
# infinite; their contrast stays finite, and "nerve_entrapment" (no events) has SE 89180.
small_site <- read.csv("safety_small_site.csv")
small_site$severity <- sorted_factor(small_site$severity)
small_site$underlying_condition <- sorted_factor(small_site$underlying_condition)
models$small_site <- coxph(Surv(time_to_recovery_days, recovered) ~ overall_adherence +
                             mean_sitting_hours + severity + chronic + underlying_condition +
                             age_years, small_site)
coefficients <- fits <- zph <- list()
for (name in names(models)) {
  fit <- models[[name]]
  estimate <- coef(fit)
  std_error <- rep(NA_real_, length(estimate))
  names(std_error) <- names(estimate)
  ok <- !is.na(estimate)
  std_error[ok] <- sqrt(diag(vcov(fit)))[names(estimate)[ok]]
  coefficients[[name]] <- data.frame(model = name, term = toolkit(names(estimate)),
                                     estimate = estimate, std_error = std_error)
  fits[[name]] <- data.frame(model = name, n = fit$n, events = fit$nevent,
                             log_likelihood = fit$loglik[2],
                             concordance = concordance(fit)$concordance)
  if (name %in% c("pbc", "rotterdam_aliased", "colon_no_events")) {
    table <- cox.zph(fit)$table
    zph[[name]] <- data.frame(model = name, term = rownames(table), statistic = table[, "chisq"],
                              dof = table[, "df"], p_value = table[, "p"])
  }
}
# The limit the toolkit reports for the other colon terms: the fit without the rows whose
# coefficient runs to -infinity (they leave every risk set as it does).
limit <- coxph(Surv(time, status) ~ age + nodes + group, droplevels(subset(colon_data,
               group != "none_died")))
coefficients$colon_limit <- data.frame(model = "colon_limit", term = toolkit(names(coef(limit))),
                                       estimate = coef(limit),
                                       std_error = sqrt(diag(vcov(limit))))
out(do.call(rbind, coefficients), "safety_reference_cox.csv")
out(do.call(rbind, fits), "safety_reference_cox_fit.csv")
out(do.call(rbind, zph), "safety_reference_zph.csv")

# Cumulative incidence with 0/1/2 codes (survfit multi-state) at chosen days.
times <- c(1000, 3000, 6000, 9000)
cif <- survfit(Surv(etime, factor(status)) ~ 1, mgus_data)
at <- summary(cif, times = times, extend = TRUE)
states <- cif$states
cif_rows <- list()
for (k in seq_along(states)) {
  if (states[k] %in% c("1", "2")) {
    cif_rows[[k]] <- data.frame(event = as.integer(states[k]), time = times,
                                estimate = at$pstate[, k], std_error = at$std.err[, k])
  }
}
out(do.call(rbind, cif_rows), "safety_reference_cif.csv")

# Fine-Gray with 0/1/2 codes, and with no censored row (crr fits it).
complete <- na.omit(mgus_data)
crr_rows <- list()
covariates <- as.matrix(complete[, c("age", "male", "mspike")])
for (code in 1:2) {
  fit <- crr(complete$etime, complete$status, covariates, failcode = code, cencode = 0)
  crr_rows[[length(crr_rows) + 1]] <- data.frame(
    model = paste0("crr_", code), term = names(fit$coef), estimate = fit$coef,
    std_error = sqrt(diag(fit$var)))
}
uncensored <- subset(complete, status != 0)
fit <- crr(uncensored$etime, uncensored$status, as.matrix(uncensored[, c("age", "male")]),
           failcode = 1, cencode = 0)
crr_rows[[length(crr_rows) + 1]] <- data.frame(
  model = "crr_no_censoring", term = names(fit$coef), estimate = fit$coef,
  std_error = sqrt(diag(fit$var)))
out(do.call(rbind, crr_rows), "safety_reference_crr.csv")

# survreg with an aliased column: R reports NA for it.
aft <- survreg(Surv(time, dead) ~ age + albumin + log_bili + I(2 * albumin),
               subset(pbc_data, time > 0))
# survreg with a level in which no one died: R stops with a huge coefficient for it (no
# warning); the toolkit marks it +inf and reports the others, which agree with R's.
aft_diverging <- survreg(Surv(time, status) ~ age + nodes + group, colon_data)
out(data.frame(term = c(toolkit(names(coef(aft_diverging))), "Log(scale)"),
               estimate = c(unname(coef(aft_diverging)), log(aft_diverging$scale)),
               std_error = sqrt(diag(vcov(aft_diverging)))),
    "safety_reference_survreg_diverging.csv")
aft_se <- setNames(rep(NA_real_, length(coef(aft))), names(coef(aft)))
aft_se[!is.na(coef(aft))] <- sqrt(diag(vcov(aft)))[names(coef(aft))[!is.na(coef(aft))]]
out(data.frame(term = c(names(coef(aft)), "Log(scale)"),
               estimate = c(unname(coef(aft)), log(aft$scale)),
               std_error = c(unname(aft_se), sqrt(vcov(aft)["Log(scale)", "Log(scale)"]))),
    "safety_reference_survreg.csv")
