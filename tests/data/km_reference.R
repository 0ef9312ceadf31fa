# Reference numbers for tests/test_survival_nonparametric.py (Kaplan-Meier, log-rank, RMST).
# Run from tests/data:  Rscript km_reference.R   (R survival 3.5-3)
# Writes the datasets it uses (km_*.csv) and R's results (km_reference_*, logrank_reference_*,
# rmst_reference_*). Groups are factors with alphabetically sorted levels, as the toolkit sorts.
library(survival)
options(digits = 15)
out <- function(frame, name) write.csv(frame, name, row.names = FALSE)

lung_data <- data.frame(time = lung$time, event = as.integer(lung$status == 2),
                        sex = ifelse(lung$sex == 1, "male", "female"))
veteran_data <- data.frame(time = veteran$time, event = veteran$status,
                           celltype = as.character(veteran$celltype), trt = veteran$trt)
ovarian_data <- data.frame(time = ovarian$futime, event = ovarian$fustat, rx = ovarian$rx)
out(lung_data, "km_lung.csv")
out(veteran_data, "km_veteran.csv")
out(ovarian_data, "km_ovarian.csv")

fits <- list(
  list(dataset = "lung", grouping = "", fit = survfit(Surv(time, event) ~ 1, lung_data)),
  list(dataset = "lung", grouping = "sex",
       fit = survfit(Surv(time, event) ~ factor(sex), lung_data)),
  list(dataset = "veteran", grouping = "celltype",
       fit = survfit(Surv(time, event) ~ factor(celltype), veteran_data)),
  list(dataset = "ovarian", grouping = "rx",
       fit = survfit(Surv(time, event) ~ factor(rx), ovarian_data))
)
group_names <- function(fit, n) {
  if (is.null(fit$strata)) rep("all", n) else sub("^[^=]*=", "", names(fit$strata))
}

medians <- curves <- at_times <- rmst <- list()
at <- c(0, 30, 100, 200.5, 365, 500)
for (item in fits) {
  fit <- item$fit
  table <- summary(fit, rmean = 365)$table
  if (is.null(dim(table))) table <- t(as.matrix(table))
  groups <- group_names(fit, nrow(table))
  medians[[length(medians) + 1]] <- data.frame(
    dataset = item$dataset, grouping = item$grouping, group = groups,
    n = table[, "records"], events = table[, "events"], median = table[, "median"],
    conf_low = table[, "0.95LCL"], conf_high = table[, "0.95UCL"])
  rmst[[length(rmst) + 1]] <- data.frame(
    dataset = item$dataset, grouping = item$grouping, group = groups, horizon = 365,
    rmst = table[, "rmean"], std_error = table[, "se(rmean)"])
  full <- summary(fit, censored = TRUE)
  strata <- if (is.null(full$strata)) rep("all", length(full$time)) else
    sub("^[^=]*=", "", as.character(full$strata))
  curves[[length(curves) + 1]] <- data.frame(
    dataset = item$dataset, grouping = item$grouping, group = strata, time = full$time,
    n_risk = full$n.risk, n_event = full$n.event, n_censor = full$n.censor,
    survival = full$surv, std_error = full$std.err, conf_low = full$lower,
    conf_high = full$upper)
  chosen <- summary(fit, times = at, extend = TRUE)
  strata <- if (is.null(chosen$strata)) rep("all", length(chosen$time)) else
    sub("^[^=]*=", "", as.character(chosen$strata))
  at_times[[length(at_times) + 1]] <- data.frame(
    dataset = item$dataset, grouping = item$grouping, group = strata, time = chosen$time,
    n_risk = chosen$n.risk, survival = chosen$surv, std_error = chosen$std.err,
    conf_low = chosen$lower, conf_high = chosen$upper)
}
out(do.call(rbind, medians), "km_reference_medians.csv")
out(do.call(rbind, curves), "km_reference_curves.csv")
out(do.call(rbind, at_times), "km_reference_at_times.csv")
rmst <- do.call(rbind, rmst)
out(rmst, "rmst_reference.csv")

# RMST difference as survRM2::rmst2 (unadjusted): later level minus first, independent groups.
differences <- list()
for (key in list(c("lung", "sex"), c("veteran", "celltype"), c("ovarian", "rx"))) {
  part <- rmst[rmst$dataset == key[1] & rmst$grouping == key[2], ]
  for (i in seq_len(nrow(part))[-1]) {
    estimate <- part$rmst[i] - part$rmst[1]
    se <- sqrt(part$std_error[i]^2 + part$std_error[1]^2)
    differences[[length(differences) + 1]] <- data.frame(
      dataset = key[1], grouping = key[2], term = paste0(part$group[i], " - ", part$group[1]),
      estimate = estimate, std_error = se, statistic = estimate / se,
      p_value = 2 * pnorm(-abs(estimate / se)),
      conf_low = estimate - qnorm(0.975) * se, conf_high = estimate + qnorm(0.975) * se)
  }
}
out(do.call(rbind, differences), "rmst_reference_difference.csv")

tests <- list(
  two_groups = survdiff(Surv(time, event) ~ sex, lung_data),
  four_groups = survdiff(Surv(time, event) ~ celltype, veteran_data),
  stratified = survdiff(Surv(time, event) ~ trt + strata(celltype), veteran_data)
)
statistics <- groups <- list()
for (case in names(tests)) {
  test <- tests[[case]]
  dof <- sum(test$n > 0) - 1
  statistics[[case]] <- data.frame(case = case, statistic = test$chisq, dof = dof,
                                   p_value = pchisq(test$chisq, dof, lower.tail = FALSE))
  groups[[case]] <- data.frame(case = case, group = sub("^[^=]*=", "", names(test$n)),
                               n = as.vector(test$n), observed = rowSums(as.matrix(test$obs)),
                               expected = rowSums(as.matrix(test$exp)))
}
out(do.call(rbind, statistics), "logrank_reference.csv")
out(do.call(rbind, groups), "logrank_reference_groups.csv")
