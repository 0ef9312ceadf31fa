# Reference fits for tests/test_survival_aft.py: R's survreg (survival 3.5-3).
# Run from tests/data:  Rscript aft_reference.R
# Writes the datasets (aft_lung.csv, aft_ovarian.csv, aft_veteran.csv, aft_lung_interval.csv)
# and the references (aft_coefficients.csv, aft_fits.csv, aft_quantiles.csv).
library(survival)
options(digits = 17)

lung_data <- data.frame(
  time = lung$time, status = lung$status - 1, age = lung$age,
  sex = ifelse(lung$sex == 1, "male", "female"), ph_ecog = lung$ph.ecog
)
ovarian_data <- data.frame(
  futime = ovarian$futime, fustat = ovarian$fustat, age = ovarian$age,
  rx = ifelse(ovarian$rx == 1, "A", "B"), ecog_ps = ovarian$ecog.ps
)
veteran_data <- data.frame(
  time = veteran$time, status = veteran$status, karno = veteran$karno,
  celltype = as.character(veteran$celltype), trt = veteran$trt
)
# Interval-censored lung: deaths known only between 30-day visits, (lower, upper];
# deaths on a multiple of 7 days are exact (lower == upper); censored at the last visit
# before censoring (upper NA); deaths in the first 30 days are left-censored, coded by
# lower = NA for even rows and by lower = 0 for odd rows.
grid_lower <- 30 * floor((lung$time - 1) / 30)
dead <- lung$status == 2
interval_lower <- ifelse(dead, grid_lower, 30 * floor(lung$time / 30))
interval_upper <- ifelse(dead, grid_lower + 30, NA)
exact <- dead & lung$time %% 7 == 0
interval_lower[exact] <- lung$time[exact]
interval_upper[exact] <- lung$time[exact]
first_month <- dead & !exact & grid_lower == 0
interval_lower[first_month & seq_along(dead) %% 2 == 0] <- NA
lung_interval <- data.frame(
  lower = interval_lower, upper = interval_upper, age = lung$age,
  sex = ifelse(lung$sex == 1, "male", "female"), ph_ecog = lung$ph.ecog
)
write.csv(lung_data, "aft_lung.csv", row.names = FALSE)
write.csv(ovarian_data, "aft_ovarian.csv", row.names = FALSE)
write.csv(veteran_data, "aft_veteran.csv", row.names = FALSE)
write.csv(lung_interval, "aft_lung_interval.csv", row.names = FALSE, na = "")

models <- list(
  lung = list(formula = Surv(time, status) ~ age + sex + ph_ecog, data = lung_data),
  ovarian = list(formula = Surv(futime, fustat) ~ age + rx + ecog_ps, data = ovarian_data),
  veteran = list(formula = Surv(time, status) ~ karno + celltype + trt, data = veteran_data),
  # survreg rejects a lower bound of 0 (log 0); an interval (0, upper] is left-censored, so
  # it is passed as lower = NA, which is what fit_aft does with a lower bound of 0.
  lung_interval = list(
    formula = Surv(ifelse(lower == 0, NA, lower), upper, type = "interval2") ~
      age + sex + ph_ecog,
    data = lung_interval
  )
)
# Rows whose predicted quantiles are stored (1-based, of the rows survreg kept).
quantile_rows <- c(1, 2, 5)
coefficient_rows <- list(); fit_rows <- list(); quantile_rows_out <- list()
for (model_name in names(models)) {
  for (distribution in c("weibull", "lognormal", "loglogistic")) {
    spec <- models[[model_name]]
    fit <- survreg(spec$formula, data = spec$data, dist = distribution)
    table <- summary(fit)$table
    key <- paste(model_name, distribution, sep = "/")
    coefficient_rows[[key]] <- data.frame(
      model = model_name, distribution = distribution, term = rownames(table),
      estimate = table[, 1], std_error = table[, 2], statistic = table[, 3],
      p_value = table[, 4]
    )
    fit_rows[[key]] <- data.frame(
      model = model_name, distribution = distribution, scale = fit$scale,
      log_likelihood = fit$loglik[2], aic = AIC(fit), n = nrow(fit$y),
      iterations = fit$iter
    )
    kept <- spec$data[-as.integer(fit$na.action), ]
    if (is.null(fit$na.action)) kept <- spec$data
    predicted <- predict(fit, newdata = kept[quantile_rows, ], type = "quantile",
                         p = c(0.1, 0.5, 0.9))
    quantile_rows_out[[key]] <- data.frame(
      model = model_name, distribution = distribution,
      row = rep(quantile_rows, 3), quantile = rep(c(0.1, 0.5, 0.9), each = 3),
      time = as.vector(predicted)
    )
  }
}
write.csv(do.call(rbind, coefficient_rows), "aft_coefficients.csv", row.names = FALSE)
write.csv(do.call(rbind, fit_rows), "aft_fits.csv", row.names = FALSE)
write.csv(do.call(rbind, quantile_rows_out), "aft_quantiles.csv", row.names = FALSE)
